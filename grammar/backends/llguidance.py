"""The llguidance backend: JSON Schema, regexes, choices and Lark/GBNF grammars through llguidance
(lazy Earley parsing over a lexer; the engine behind OpenAI's structured outputs and vLLM's
``guidance`` backend). Compiling builds a template matcher on a thread (llguidance drops the GIL)
under llguidance's own fuel and size limits; each request gets a deep copy. Forced tokens
(``compute_ff_tokens``) give jump-forward."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from llguidance import LLMatcher, LLParserLimits, LLTokenizer

from loomlm.grammar.backends.base import PreparedGrammar
from loomlm.grammar.errors import GrammarCompileError, GrammarError, InvalidRegexError
from loomlm.grammar.llg_schema import prepare_llg_schema
from loomlm.grammar.schema_strings import escape_literal
from loomlm.grammar.specs import GrammarSpec

_NUM_THREADS = 2
_CACHE_SIZE = 256


class LlguidanceBackend:
    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int, *, limits: LLParserLimits | None = None) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._limits = limits
        self._tokenizer: LLTokenizer | None = None  # built on first use (about 0.5 s for 49k tokens)
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, LLMatcher] = OrderedDict()
        self._in_flight: dict[str, Future] = {}
        self._executor = ThreadPoolExecutor(_NUM_THREADS, thread_name_prefix="loomlm-llguidance")

    @property
    def tokenizer(self) -> LLTokenizer:
        if self._tokenizer is None:
            from llguidance.hf import from_tokenizer

            self._tokenizer = from_tokenizer(self._hf_tokenizer, n_vocab=self.vocab_size)
        return self._tokenizer

    # -- prepare (in the calling thread: cheap, bounded) ---------------------------------------------
    def prepare(self, spec: GrammarSpec) -> PreparedGrammar:
        dropped: tuple[str, ...] = ()
        if spec.kind == "json":
            prepared = prepare_llg_schema(
                True if spec.schema is None else spec.schema,
                strict=spec.options.strict,
                whitespace=spec.options.whitespace,
                indent=spec.options.indent,
            )
            grammar = prepared.grammar_json
            dropped = tuple(f"{keyword} at {pointer or '/'}" for keyword, pointer in prepared.dropped)
        elif spec.kind == "regex":
            grammar = LLMatcher.grammar_from_regex(spec.pattern)
        elif spec.kind == "choice":
            alternatives = "|".join(escape_literal(str(o)) for o in spec.choices)
            grammar = LLMatcher.grammar_from_regex(f"({alternatives})")
        else:
            grammar = LLMatcher.grammar_from_lark(spec.grammar)
        if spec.kind != "json":  # prepare_llg_schema has validated a JSON grammar already
            error = LLMatcher.validate_grammar(grammar, None, limits=self._limits)
            if error and not error.startswith("WARNING"):
                raise _grammar_error(spec, error)
        key = hashlib.blake2b(f"llguidance\0{grammar}".encode(), digest_size=16).hexdigest()
        return PreparedGrammar(self.name, grammar, key, dropped)

    # -- compile (off the engine thread) ------------------------------------------------------------
    def submit(self, prepared: PreparedGrammar) -> Future[LLMatcher]:
        with self._lock:
            template = self._memory.get(prepared.key)
            if template is not None:
                self._memory.move_to_end(prepared.key)
                future: Future[LLMatcher] = Future()
                future.set_result(template)
                return future
            future = self._in_flight.get(prepared.key)
            if future is None:
                future = self._executor.submit(self._compile, prepared)
                self._in_flight[prepared.key] = future
                future.add_done_callback(lambda _f, key=prepared.key: self._done(key))
            return future

    def _done(self, key: str) -> None:
        with self._lock:
            self._in_flight.pop(key, None)

    def _compile(self, prepared: PreparedGrammar) -> LLMatcher:
        matcher = LLMatcher(self.tokenizer, prepared.source, log_level=0, limits=self._limits)
        if matcher.is_error():
            raise GrammarCompileError(f"the grammar could not be compiled: {matcher.get_error()}")
        with self._lock:
            self._memory[prepared.key] = matcher
            while len(self._memory) > _CACHE_SIZE:
                self._memory.popitem(last=False)
        return matcher

    def new_state(self, compiled: LLMatcher) -> LlguidanceGrammarState:
        return LlguidanceGrammarState(compiled.deep_copy(), self.vocab_size)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class LlguidanceGrammarState:
    """A GrammarState over one LLMatcher. llguidance allows EOS exactly where the text is complete
    and stops (``is_stopped``) once nothing else can follow."""

    __slots__ = ("_mask_bytes", "_matcher")

    def __init__(self, matcher: LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._mask_bytes = -(-vocab_size // 32) * 4

    def accept_token(self, token_id: int) -> bool:
        # A refused token would put the matcher in its error state for good: check first.
        if self._matcher.validate_tokens([token_id]) != 1:
            return False
        return self._matcher.consume_token(token_id)

    def validate_tokens(self, token_ids: list[int]) -> int:
        return self._matcher.validate_tokens(token_ids)

    def rollback(self, num_tokens: int) -> None:
        if num_tokens > 0 and not self._matcher.rollback(num_tokens):
            raise ValueError(f"cannot roll back {num_tokens} tokens: {self._matcher.get_error()}")

    def fill_bitmask(self, row: np.ndarray) -> None:
        self._matcher.unsafe_compute_mask_ptr(row.ctypes.data, self._mask_bytes)
        row[self._mask_bytes // 4 :] = 0  # virtual ids past the vocabulary are never allowed

    def is_terminated(self) -> bool:
        return self._matcher.is_stopped()

    def is_accepting(self) -> bool:
        return self._matcher.is_accepting()

    def forced_tokens(self) -> list[int]:
        if self._matcher.is_stopped() or self._matcher.is_error():
            return []
        return list(self._matcher.compute_ff_tokens())

    def reset(self) -> None:
        self._matcher.reset()


def _grammar_error(spec: GrammarSpec, message: str) -> GrammarError:
    if spec.kind in ("regex", "choice"):
        return InvalidRegexError(f"the regex {spec.pattern!r} does not parse for llguidance: {message}")
    return GrammarError(f"the grammar is not valid: {message}")
