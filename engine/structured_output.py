"""StructuredOutputManager: the engine's side of the grammar seam.

At intake it resolves a request's response format to a GrammarSpec and has the chosen grammar
backend prepare it (both cached; ``grammar/backends``: ``auto``, ``llguidance`` or ``outlines``),
then submits the prepared grammar for compiling, which returns a Future. The scheduler calls
``activate`` so that requests whose grammar is still compiling wait without blocking others; each
step fills the bitmask rows of the constrained requests (optionally on the manager's worker thread
while the forward runs: ``start_fill``), and after sampling ``advance`` (the only caller of a
grammar state's ``accept_token``) moves their automata. Nothing here (no vocabulary,
no worker process) is built until the first constrained request arrives."""

from __future__ import annotations

import enum
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

import torch

from loomlm.engine.request import Request
from loomlm.grammar.backends.base import BACKEND_NAMES, GrammarBackend, PreparedGrammar, prepare_with
from loomlm.grammar.backends.llguidance import LlguidanceBackend
from loomlm.grammar.backends.outlines import OutlinesBackend
from loomlm.grammar.bitmask import TokenBitmask
from loomlm.grammar.compiler import CompilerConfig
from loomlm.grammar.json_schema import check_schema_size
from loomlm.grammar.specs import GrammarSpec, JsonSchema, resolve_response_format
from loomlm.grammar.vocabulary import TokenVocabulary

_SPEC_CACHE_SIZE = 512
# Whether a step fills its grammar masks on a worker thread while the model forward runs
# (``StructuredOutputManager.start_fill``): the default of every new manager; LOOMLM_OVERLAP_FILL=1
# turns it on. Off because on CPU it measured 1-6% slower in wall time (the forward already keeps
# every core busy, and the worker adds GIL handoffs); a GPU forward is not measured yet.
# bench/mask_overlap.py, bench/RESULTS.md.
OVERLAP_FILL = os.environ.get("LOOMLM_OVERLAP_FILL", "0") == "1"

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
        backend: str = "auto",
        overlap_fill: bool | None = None,
        on_compile: Callable[[float], None] | None = None,
    ) -> None:
        """``on_compile(seconds)`` is called from the compile thread when a compile this manager
        started ends (done or failed): seconds from submit, queueing included, which is what the
        requests waited (the engine's metrics observe it)."""
        if backend not in BACKEND_NAMES:
            raise ValueError(f"grammar_backend must be one of {', '.join(BACKEND_NAMES)}, got {backend!r}")
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_num_seqs = max_num_seqs
        self.device = torch.device(device)
        self.config = config or CompilerConfig()
        self.backend = backend
        self.overlap_fill = OVERLAP_FILL if overlap_fill is None else overlap_fill
        self._fill_worker: ThreadPoolExecutor | None = None  # one long-lived thread, made on first use
        self._vocabulary: TokenVocabulary | None = None
        self._backends: dict[str, GrammarBackend] = {}
        self._bitmask: TokenBitmask | None = None
        self._resolved: OrderedDict[Hashable, tuple[GrammarSpec, PreparedGrammar]] = OrderedDict()
        self._on_compile = on_compile
        # Compiles this manager started and still running: a submit that returns one of them joins it.
        self._compiling: set[Future] = set()
        # Lifetime counts (metrics read them): submits, and those that started no compile (the
        # backend's memory cache had it, or the same compile was already running).
        self.num_grammar_queries = 0
        self.num_grammar_hits = 0

    @property
    def vocabulary(self) -> TokenVocabulary:
        if self._vocabulary is None:
            self._vocabulary = TokenVocabulary.from_tokenizer(self.tokenizer, self.vocab_size)
        return self._vocabulary

    @property
    def backends(self) -> dict[str, GrammarBackend]:
        """Both backends, built on first use (neither starts a worker before its first compile)."""
        if not self._backends:
            self._backends = {
                "llguidance": LlguidanceBackend(self.tokenizer, self.vocab_size),
                "outlines": OutlinesBackend(self.vocabulary, self.config),
            }
        return self._backends

    # -- intake -----------------------------------------------------------------------------------
    def resolve(self, response_format: Any) -> tuple[GrammarSpec, PreparedGrammar]:
        """The GrammarSpec of a response format, prepared by its backend; raises a GrammarError (a
        RequestError) naming the problem if no backend can enforce it."""
        key = _format_key(response_format)
        resolved = self._resolved.get(key) if key is not None else None
        if resolved is None:
            spec = resolve_response_format(response_format)
            resolved = spec, prepare_with(self.backends, self.backend, spec)
            if key is not None:
                self._resolved[key] = resolved
                while len(self._resolved) > _SPEC_CACHE_SIZE:
                    self._resolved.popitem(last=False)
        else:
            self._resolved.move_to_end(key)
        return resolved

    def attach(self, requests: Sequence[Request], response_format: Any) -> None:
        """Resolve the format and start compiling; the requests (n siblings) share one Future."""
        spec, prepared = self.resolve(response_format)
        started = time.monotonic()
        future = self.backends[prepared.backend].submit(prepared)
        self._count_compile(future, started)
        for request in requests:
            request.grammar_spec = spec
            request.grammar_backend = prepared.backend
            request.grammar_future = future

    def _count_compile(self, future: Future, started: float) -> None:
        # Membership first: a joined compile leaves the set only once done, so one that finished
        # in between is seen as done, never as a new compile. (An outlines disk-cache read happens
        # on the compile thread, so it counts as a compile: a fast one.)
        self.num_grammar_queries += 1
        if future in self._compiling or future.done():
            self.num_grammar_hits += 1
            return
        self._compiling.add(future)
        future.add_done_callback(lambda done: self._compile_done(done, started))

    def _compile_done(self, future: Future, started: float) -> None:
        """Runs on the compile thread: set.discard is atomic, and ``on_compile`` must be thread-safe
        (a prometheus_client histogram is)."""
        self._compiling.discard(future)
        if self._on_compile is not None:
            self._on_compile(time.monotonic() - started)

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
        # Built once, before the first token; preemption keeps it (recompute replays no tokens).
        request.grammar = self.backends[request.grammar_backend].new_state(future.result())
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
    def _token_bitmask(self) -> TokenBitmask:
        if self._bitmask is None:
            self._bitmask = TokenBitmask(self.max_num_seqs, self.vocabulary.mask_width_words, self.device)
        return self._bitmask

    def fill_bitmask(self, requests: Sequence[Request]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Bitmask rows for the step's sampling rows (``requests`` in row order), or None."""
        states = [r.grammar for r in requests]
        if all(state is None for state in states):
            return None
        return self._token_bitmask().fill(states)

    def start_fill(self, requests: Sequence[Request]) -> MaskFill | None:
        """Start filling the bitmask rows of ``requests`` (row order) on the manager's worker thread,
        so that it runs while the forward does; ``MaskFill.result()`` joins it. None when the overlap
        is off or no row is constrained (no thread handoff then): the caller uses ``fill_bitmask``.

        Until the join the worker owns the bitmask's host rows and these requests' grammar states:
        the caller must touch neither. The engine runs only the model forward in between; the
        grammar advance and forced tokens (``Scheduler.update``), aborts and the next step's fill all
        come after the join, on the engine's thread."""
        if not self.overlap_fill:
            return None
        states = [r.grammar for r in requests]
        if all(state is None for state in states):
            return None
        bitmask = self._token_bitmask()  # built here: the vocabulary is made on the engine's thread
        if self._fill_worker is None:
            self._fill_worker = ThreadPoolExecutor(1, thread_name_prefix="loomlm-mask-fill")
        return MaskFill(self._fill_worker.submit(bitmask.fill_host, states), bitmask, len(states))

    @staticmethod
    def advance(request: Request, token_id: int) -> bool:
        """Move the request's automaton by its sampled token; False when the grammar refuses it."""
        return request.grammar is None or request.grammar.accept_token(token_id)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        if self._fill_worker is not None:
            self._fill_worker.shutdown(wait=True)  # idle: every step joins its fill before returning
            self._fill_worker = None


class MaskFill:
    """A step's bitmask fill running on the StructuredOutputManager's worker thread."""

    __slots__ = ("_bitmask", "_future", "_num_rows")

    def __init__(self, future: Future[list[int]], bitmask: TokenBitmask, num_rows: int) -> None:
        self._future = future
        self._bitmask = bitmask
        self._num_rows = num_rows

    def result(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Join the fill (re-raising what it raised), then upload the rows from this thread: what
        ``fill_bitmask`` would have returned."""
        rows = self._future.result()
        return self._bitmask.upload(self._num_rows, rows) if rows else None

    def wait(self) -> None:
        """Join without raising, for a caller that is already propagating another error."""
        wait_futures([self._future])


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
            check_schema_size(fmt)  # a shared sub-dict would repeat in the JSON text: bound it first
            return ("schema", json.dumps(fmt, separators=(",", ":")))
        hash(fmt)
    except TypeError:
        return None
    return ("format", fmt)
