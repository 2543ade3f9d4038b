"""StructuredOutputManager: the engine's side of the grammar seam.

At intake it resolves a request's response format to a GrammarSpec (cached) and submits the
regex to the compiler, which returns a Future; the scheduler calls ``activate`` so that requests
whose grammar is still compiling wait without blocking others; each step it fills the bitmask rows
of the constrained requests, and after sampling it advances their grammar states. Nothing here
(no vocabulary, no worker process) is built until the first constrained request arrives."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from loomlm.engine.request import Request
from loomlm.grammar.bitmask import TokenBitmask
from loomlm.grammar.compiler import CompilerConfig, GrammarCompiler
from loomlm.grammar.specs import GrammarSpec, JsonSchema, resolve_response_format
from loomlm.grammar.state import IndexGrammarState
from loomlm.grammar.vocabulary import TokenVocabulary

_SPEC_CACHE_SIZE = 512


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
    def activate(self, request: Request) -> bool | str:
        """Give the request its grammar state once its compile is done. True when it can run (it
        has its state, or needs none); False while compiling; the error message if it failed."""
        if request.grammar_future is None or request.grammar is not None:
            return True
        future = request.grammar_future
        if not future.done():
            return False
        error = future.exception()
        if error is not None:
            return str(error)
        compiled = future.result()
        # Built once, before the first token; preemption keeps it (recompute replays no tokens).
        vocabulary = self.vocabulary
        request.grammar = IndexGrammarState(
            compiled.index,
            vocabulary.eos_token_id,
            vocabulary.end_marker_token_id,
            uses_end_marker=compiled.uses_end_marker,
        )
        return True

    # -- one step ---------------------------------------------------------------------------------
    def fill_bitmask(self, requests: Sequence[Request]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Bitmask rows for the step's sampling rows (``requests`` in row order), or None."""
        states = [r.grammar for r in requests]
        if all(state is None for state in states):
            return None
        if self._bitmask is None:
            self._bitmask = TokenBitmask(self.max_num_seqs, self.vocabulary.mask_width_words, self.device)
        return self._bitmask.fill(states)

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
