"""GrammarCompiler: regex -> outlines-core Index, off the engine's thread, cached.

``submit`` returns a Future at once: a memory LRU hit is already done; otherwise a compile thread
checks the on-disk cache (see ``disk_cache``: data only, authenticated) and then hands the regex to
a worker process (see ``worker_pool``) under a time limit. Identical regexes in flight share one
Future. Cache keys hash the regex, the vocabulary digest and the outlines-core version; the regex
already encodes every spec option."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loomlm.grammar.disk_cache import GrammarDiskCache
from loomlm.grammar.errors import GrammarCompileError
from loomlm.grammar.schema_options import DEFAULT_MAX_REGEX_LEN
from loomlm.grammar.vocabulary import END_MARKER, TokenVocabulary
from loomlm.grammar.worker_pool import CompileWorker

_OUTLINES_VERSION = version("outlines-core")


@dataclass(frozen=True, slots=True)
class CompilerConfig:
    num_workers: int = 1
    memory_cache_size: int = 256
    cache_dir: Path | None = None  # None: no disk cache
    timeout_s: float = 30.0
    max_regex_len: int = DEFAULT_MAX_REGEX_LEN
    memory_limit_bytes: int | None = 4 << 30

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.memory_cache_size < 0:
            raise ValueError(f"memory_cache_size must be >= 0, got {self.memory_cache_size}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.max_regex_len < 1:
            raise ValueError(f"max_regex_len must be >= 1, got {self.max_regex_len}")


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    key: str
    index: Any  # outlines_core.Index
    source: str  # "memory", "disk" or "compiled", for stats and benchmarks
    uses_end_marker: bool = False  # compiled as (?:regex)END_MARKER (see vocabulary.END_MARKER)


class GrammarCompiler:
    def __init__(self, vocabulary: TokenVocabulary, config: CompilerConfig | None = None) -> None:
        self.vocabulary = vocabulary
        self.config = config = config or CompilerConfig()
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._in_flight: dict[str, Future] = {}
        self._executor = ThreadPoolExecutor(config.num_workers, thread_name_prefix="loomlm-grammar")
        self._disk = None if config.cache_dir is None else GrammarDiskCache(config.cache_dir)
        self._workers: queue.SimpleQueue[CompileWorker] = queue.SimpleQueue()
        tokens = vocabulary.to_outlines_map()
        for _ in range(config.num_workers):
            self._workers.put(
                CompileWorker(vocabulary.outlines_eos_token_id, tokens, config.memory_limit_bytes)
            )

    def cache_key(self, regex: str, end_marker: bool = False) -> str:
        h = hashlib.blake2b(digest_size=20)
        for part in (regex, END_MARKER if end_marker else "", self.vocabulary.digest, _OUTLINES_VERSION):
            h.update(part.encode())
            h.update(b"\x00")
        return h.hexdigest()

    def submit(self, regex: str, end_marker: bool = False) -> Future[CompiledGrammar]:
        """Compile ``regex`` (a full match, ended by EOS) to an Index. ``end_marker`` appends
        vocabulary.END_MARKER so that no accepting state is left early (exact for any regex, but it
        can make outlines-core's construction much slower: use it where the regex needs it)."""
        if len(regex) > self.config.max_regex_len:
            future: Future[CompiledGrammar] = Future()
            future.set_exception(
                GrammarCompileError(
                    f"the grammar's regex has {len(regex)} characters, over the limit of "
                    f"{self.config.max_regex_len}; simplify the schema (fewer enumerated values, smaller "
                    "bounds) or raise max_regex_len"
                )
            )
            return future
        key = self.cache_key(regex, end_marker)
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                future = Future()
                future.set_result(CompiledGrammar(key, hit.index, "memory", end_marker))
                return future
            future = self._in_flight.get(key)
            if future is None:
                full = f"(?:{regex}){END_MARKER}" if end_marker else regex
                future = self._executor.submit(self._compile, key, full, end_marker)
                self._in_flight[key] = future
                future.add_done_callback(lambda _f, key=key: self._done(key))
            return future

    def _done(self, key: str) -> None:
        with self._lock:
            self._in_flight.pop(key, None)

    def _compile(self, key: str, regex: str, end_marker: bool) -> CompiledGrammar:
        index = None if self._disk is None else self._disk.read(key)
        source = "disk"
        if index is None:
            worker = self._workers.get()
            try:
                index = worker.compile(regex, self.config.timeout_s)
            finally:
                self._workers.put(worker)
            source = "compiled"
            if self._disk is not None:
                self._disk.write(key, index)
        compiled = CompiledGrammar(key, index, source, end_marker)
        with self._lock:
            if self.config.memory_cache_size:
                self._memory[key] = compiled
                self._memory.move_to_end(key)
                while len(self._memory) > self.config.memory_cache_size:
                    self._memory.popitem(last=False)
        return compiled

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        while not self._workers.empty():
            self._workers.get().close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down the pool
            self.close()
