"""The outlines-core backend: our JSON Schema -> regex translator (exact numeric ranges, every
accepted keyword enforced, a size budget on the regex) and outlines-core's token index, compiled in
a worker process under time and memory limits (``grammar/compiler.py``)."""

from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import Future
from typing import Any

from loomlm.grammar.backends.base import PreparedGrammar
from loomlm.grammar.compiler import CompiledGrammar, CompilerConfig, GrammarCompiler
from loomlm.grammar.errors import GrammarError
from loomlm.grammar.json_schema import json_value_regex, schema_to_regex
from loomlm.grammar.schema_strings import escape_literal
from loomlm.grammar.specs import GrammarSpec
from loomlm.grammar.state import GrammarState, IndexGrammarState
from loomlm.grammar.vocabulary import TokenVocabulary


class OutlinesBackend:
    name = "outlines"

    def __init__(self, vocabulary: TokenVocabulary, config: CompilerConfig) -> None:
        self.vocabulary = vocabulary
        self.config = config
        self._compiler: GrammarCompiler | None = None  # worker processes start on first compile

    @property
    def compiler(self) -> GrammarCompiler:
        if self._compiler is None:
            self._compiler = GrammarCompiler(self.vocabulary, self.config)
        return self._compiler

    def prepare(self, spec: GrammarSpec) -> PreparedGrammar:
        dropped: tuple[str, ...] = ()
        if spec.kind == "regex":
            regex = spec.pattern
        elif spec.kind == "choice":
            regex = "(" + "|".join(escape_literal(str(o)) for o in spec.choices) + ")"
        elif spec.kind == "grammar":
            raise GrammarError(
                "context-free grammars need the llguidance backend (grammar_backend='llguidance')"
            )
        elif spec.schema is None:
            regex = json_value_regex(spec.max_depth, self._options(spec))
        else:
            translated = schema_to_regex(spec.schema, self._options(spec))
            regex = translated.regex
            dropped = tuple(f"{d.keyword} at {d.pointer or '/'}" for d in translated.dropped)
        # outlines-core 0.2 drops transitions out of an accepting state ("12" could not grow to
        # "12.5"); the end marker (vocabulary.END_MARKER) restores them. JSON objects, arrays and
        # strings end in a delimiter and skip it: it makes large automata much slower to build.
        end_marker = spec.kind != "json" or spec.may_be_bare_number
        key = hashlib.blake2b(f"outlines\0{end_marker}\0{regex}".encode(), digest_size=16).hexdigest()
        return PreparedGrammar(self.name, regex, key, dropped, end_marker)

    def _options(self, spec: GrammarSpec):
        # The translator's size budget is the compiler's regex limit: refused before it is built.
        return dataclasses.replace(spec.options, max_regex_len=self.config.max_regex_len)

    def submit(self, prepared: PreparedGrammar) -> Future[CompiledGrammar]:
        return self.compiler.submit(prepared.source, end_marker=prepared.end_marker)

    def new_state(self, compiled: Any) -> GrammarState:
        return IndexGrammarState(
            compiled.index,
            self.vocabulary.eos_token_id,
            self.vocabulary.end_marker_token_id,
            uses_end_marker=compiled.uses_end_marker,
        )

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.close()
