"""StructuredOutputManager: the engine's side of the grammar seam.

At intake it resolves a request's response format to a GrammarSpec (cached) and submits the
regex to the compiler, which returns a Future; the scheduler calls ``activate`` so that requests
whose grammar is still compiling wait without blocking others; each step it fills the bitmask rows
of the constrained requests, and after sampling ``advance`` (the only caller of a grammar state's
``accept_token``) moves their automata. Nothing here (no vocabulary, no worker process) is built
until the first constrained request arrives."""

from __future__ import annotations

import enum
import json
import logging
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from typing import Any

import torch

from loomlm.engine.request import Request
from loomlm.grammar.bitmask import TokenBitmask
from loomlm.grammar.compiler import CompilerConfig, GrammarCompiler
from loomlm.grammar.specs import GrammarSpec, JsonSchema, resolve_response_format
from loomlm.grammar.state import IndexGrammarState
from loomlm.grammar.vocabulary import TokenVocabulary

_SPEC_CACHE_SIZE = 512

logger = logging.getLogger(__name__)


class GrammarStatus(enum.Enum):
    """Where a request stands with its grammar, for admission."""

    READY = "ready"  # it has its grammar state, or needs none
    COMPILING = "compiling"
    FAILED = "failed"  # the compile failed: ``compile_error`` says why


class StructuredOutputManager:
    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int,
        max_num_seqs: int,
        device: torch.device | str = "cpu",
        config: CompilerConfig | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_num_seqs = max_num_seqs
        self.device = torch.device(device)
        self.config = config or CompilerConfig()
        self._vocabulary: TokenVocabulary | None = None
        self._compiler: GrammarCompiler | None = None
        self._bitmask: TokenBitmask | None = None
        self._specs: OrderedDict[Hashable, GrammarSpec] = OrderedDict()

    @property
    def vocabulary(self) -> TokenVocabulary:
        if self._vocabulary is None:
            self._vocabulary = TokenVocabulary.from_tokenizer(self.tokenizer, self.vocab_size)
        return self._vocabulary

    @property
    def compiler(self) -> GrammarCompiler:
        if self._compiler is None:
            self._compiler = GrammarCompiler(self.vocabulary, self.config)
        return self._compiler

    # -- intake -----------------------------------------------------------------------------------
    def resolve(self, response_format: Any) -> GrammarSpec:
        """The GrammarSpec of a response format; raises a GrammarError (ValueError) if unusable."""
        key = _format_key(response_format)
        spec = self._specs.get(key) if key is not None else None
        if spec is None:
            spec = resolve_response_format(response_format)
            if key is not None:
                self._specs[key] = spec
                while len(self._specs) > _SPEC_CACHE_SIZE:
                    self._specs.popitem(last=False)
        else:
            self._specs.move_to_end(key)
        return spec

    def attach(self, requests: Sequence[Request], response_format: Any) -> None:
        """Resolve the format and start compiling; the requests (n siblings) share one Future."""
        spec = self.resolve(response_format)
        future = self.compiler.submit(spec.regex, end_marker=spec.needs_end_marker)
        for request in requests:
            request.grammar_spec = spec
            request.grammar_future = future

    # -- scheduling -------------------------------------------------------------------------------
    def activate(self, request: Request) -> GrammarStatus:
        """Give the request its grammar state once its compile is done."""
        if request.grammar_future is None or request.grammar is not None:
            return GrammarStatus.READY
        future = request.grammar_future
        if not future.done():
            return GrammarStatus.COMPILING
        error = future.exception()
        if error is not None:
            logger.info("request %s: grammar compile failed: %s", request.request_id, error)
            return GrammarStatus.FAILED
        compiled = future.result()
        # Built once, before the first token; preemption keeps it (recompute replays no tokens).
        vocabulary = self.vocabulary
        request.grammar = IndexGrammarState(
            compiled.index,
            vocabulary.eos_token_id,
            vocabulary.end_marker_token_id,
            uses_end_marker=compiled.uses_end_marker,
        )
        return GrammarStatus.READY

    @staticmethod
    def compile_error(request: Request) -> str:
        """Why the request's grammar failed to compile (after ``activate`` said FAILED)."""
        return str(request.grammar_future.exception())

    @staticmethod
    def wait_for_compiles(requests: Iterable[Request], timeout_s: float) -> None:
        """Block until one of the requests' pending compiles finishes (or ``timeout_s``): the engine
        calls it when nothing else can run, instead of spinning a core."""
        pending = [
            r.grammar_future
            for r in requests
            if r.grammar is None and r.grammar_future is not None and not r.grammar_future.done()
        ]
        if pending:
            wait_futures(pending, timeout=timeout_s, return_when=FIRST_COMPLETED)

    # -- one step ---------------------------------------------------------------------------------
    def fill_bitmask(self, requests: Sequence[Request]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Bitmask rows for the step's sampling rows (``requests`` in row order), or None."""
        states = [r.grammar for r in requests]
        if all(state is None for state in states):
            return None
        if self._bitmask is None:
            self._bitmask = TokenBitmask(self.max_num_seqs, self.vocabulary.mask_width_words, self.device)
        return self._bitmask.fill(states)

    @staticmethod
    def advance(request: Request, token_id: int) -> bool:
        """Move the request's automaton by its sampled token; False when the grammar refuses it."""
        return request.grammar is None or request.grammar.accept_token(token_id)

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.close()


def _format_key(response_format: Any) -> Hashable | None:
    """A hashable identity for caching a format's translation, or None to skip the cache."""
    fmt = response_format
    try:
        if isinstance(fmt, JsonSchema):
            inner = _format_key(fmt.schema)
            if inner is None:
                return None
            return ("options", inner, fmt.strict, fmt.whitespace, fmt.indent, fmt.max_recursion_depth)
        if isinstance(fmt, dict):
            return ("schema", json.dumps(fmt, separators=(",", ":")))
        hash(fmt)
    except TypeError:
        return None
    return ("format", fmt)
