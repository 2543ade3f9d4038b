"""Per-schema measurements behind ``grammar_corpus.py``: loading a JSONSchemaBench folder, a cold
prepare + compile through one grammar backend choice, and the mask-fill cost along a sampled path.

Nothing here builds a model: the backends run on the real SmolLM2 tokenizer and vocabulary."""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loomlm.grammar.backends.base import PreparedGrammar, prepare_with
from loomlm.grammar.backends.llguidance import LlguidanceBackend
from loomlm.grammar.backends.outlines import OutlinesBackend
from loomlm.grammar.errors import GrammarError
from loomlm.grammar.specs import GrammarSpec, resolve_response_format

MAX_WALK_TOKENS = 64


@dataclass
class CorpusSchema:
    name: str  # file name without .json
    subset: str  # the file-name prefix before "---" (12 subsets in the dev sample)
    schema: Any
    spec: GrammarSpec | None = None
    spec_error: str | None = None  # resolve_response_format refused it (counts against every backend)


@dataclass
class CompileResult:
    """One schema through one backend choice: accepted (``ms`` set) or refused (``reason`` set)."""

    ok: bool
    ms: float | None = None  # prepare + compile
    prepare_ms: float | None = None
    reason: str | None = None
    backend: str | None = None  # under auto: the backend that took it
    prepared: PreparedGrammar | None = None
    compiled: Any = None
    mask_us: list[float] = field(default_factory=list)


def load_corpus(directory: str | Path, limit: int | None = None) -> list[CorpusSchema]:
    """Every ``*.json`` file of the folder ({"description", "meta", "schema"}), sorted by name; with
    ``limit``, the first ``limit`` of each subset."""
    entries: list[CorpusSchema] = []
    per_subset: dict[str, int] = {}
    for path in sorted(Path(directory).glob("*.json")):
        subset = path.stem.split("---")[0]
        if limit is not None and per_subset.get(subset, 0) >= limit:
            continue
        per_subset[subset] = per_subset.get(subset, 0) + 1
        entry = CorpusSchema(path.stem, subset, json.loads(path.read_text())["schema"])
        try:
            entry.spec = resolve_response_format(entry.schema)
        except GrammarError as error:
            entry.spec_error = reason_of(error)
        entries.append(entry)
    return entries


def reason_of(error: BaseException) -> str:
    """A short, groupable refusal reason: the error class, plus the keyword it names if any, else
    the first words of the message."""
    message = str(error)
    keyword = re.search(r"keyword '([^']+)'", message)
    if keyword:
        return f"{type(error).__name__}: keyword '{keyword.group(1)}'"
    if "longer than" in message and "stopped" in message:
        return f"{type(error).__name__}: compile time limit"
    words = re.sub(r"\d+", "N", message).split()[:6]
    return f"{type(error).__name__}: {' '.join(words)}"


def _forget(backend: Any, prepared: PreparedGrammar) -> None:
    """Drop the grammar from the backend's memory cache so that the next submit compiles it."""
    if isinstance(backend, OutlinesBackend):
        compiler = backend.compiler
        compiler._memory.pop(compiler.cache_key(prepared.source, prepared.end_marker), None)
    elif isinstance(backend, LlguidanceBackend):
        backend._memory.pop(prepared.key, None)


def cold_compile(backends: dict[str, Any], choice: str, spec: GrammarSpec) -> CompileResult:
    """Prepare + compile ``spec`` with cold caches (the outlines worker and the llguidance tokenizer
    already built), timed together; any GrammarError (refused keyword, regex budget, compile error,
    time or memory limit) is a refusal."""
    start = time.perf_counter()
    try:
        prepared = prepare_with(backends, choice, spec)
        prepared_at = time.perf_counter()
        backend = backends[prepared.backend]
        _forget(backend, prepared)
        compiled = backend.submit(prepared).result()
    except GrammarError as error:
        return CompileResult(False, reason=reason_of(error))
    except Exception as error:  # a crash in a backend is a refusal too, but says so
        return CompileResult(False, reason=f"crash {type(error).__name__}: {str(error)[:60]}")
    ms, prepare_ms = (time.perf_counter() - start) * 1e3, (prepared_at - start) * 1e3
    return CompileResult(True, ms, prepare_ms, backend=prepared.backend, prepared=prepared, compiled=compiled)


class MaskWalker:
    """Walks a grammar state along a random valid path and times ``fill_bitmask`` at each step.

    At each step the next token is drawn from the allowed ones: half the time uniformly, half the
    time among "structural" tokens (no letter or digit: quotes, commas, braces, spaces), so that
    strings close and the walk moves through the whole structure instead of staying in the first
    string. EOS is taken only when nothing else is allowed."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_id: int, row_words: int) -> None:
        self.vocab_size = vocab_size
        self.eos = eos_token_id
        self.row = np.zeros(row_words, dtype=np.int32)
        texts = tokenizer.batch_decode([[i] for i in range(min(vocab_size, len(tokenizer)))])
        structural = np.zeros(vocab_size, dtype=bool)
        structural[: len(texts)] = [bool(t) and not any(c.isalnum() for c in t) for t in texts]
        self.structural = structural
        self.walk_errors = 0  # a token the mask allowed but accept_token refused (a backend bug)
        self.terminated = 0  # walks that reached the grammar's end

    def walk(self, state: Any, rng: random.Random, max_tokens: int = MAX_WALK_TOKENS) -> list[float]:
        samples: list[float] = []
        for _ in range(max_tokens):
            if state.is_terminated():
                self.terminated += 1
                break
            start = time.perf_counter_ns()
            state.fill_bitmask(self.row)
            samples.append((time.perf_counter_ns() - start) / 1e3)
            bits = np.unpackbits(self.row.view(np.uint8), bitorder="little")[: self.vocab_size]
            allowed = np.flatnonzero(bits)
            choices = allowed[allowed != self.eos]
            if choices.size == 0:
                if allowed.size and state.accept_token(self.eos):
                    self.terminated += 1
                else:
                    self.walk_errors += 1
                break
            if rng.random() < 0.5:
                structural = choices[self.structural[choices]]
                if structural.size:
                    choices = structural
            token = int(choices[rng.randrange(choices.size)])
            if not state.accept_token(token):
                self.walk_errors += 1
                break
        return samples


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")
