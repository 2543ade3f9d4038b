"""EngineLoop: the one thread that owns an LLMEngine behind AsyncLLM, and OutputSink, where it
delivers one request's outputs to the asyncio loop that added it.

Only the engine thread touches the engine. Everything else (adding a request, aborting, adapters,
stats) is a command: a callable queued under a condition and run on the engine thread between two
steps, its result handed back through a ``concurrent.futures.Future``. With no command and no
unfinished request the thread sleeps on the condition. A thread, not a process: the forward is torch
ops, which release the GIL, so the event loop keeps running while a step computes, and outputs and
commands cross without pickling. An exception from ``engine.step`` is a bug: every in-flight
request's consumer gets it, queued commands fail, and the loop admits nothing more."""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from loomlm.common.errors import QueueFullError, RequestError
from loomlm.engine.engine import LLMEngine
from loomlm.engine.outputs import RequestOutput

logger = logging.getLogger(__name__)

T = TypeVar("T")


class EngineStoppedError(RuntimeError):
    """The AsyncLLM takes no new work: it is draining, shut down, or its engine loop failed (then
    ``__cause__`` is the failure)."""


class LoopState(enum.Enum):
    """Where an EngineLoop is: it admits requests only while RUNNING."""

    RUNNING = "running"
    DRAINING = "draining"  # in-flight requests go on; no new ones
    STOPPED = "stopped"
    FAILED = "failed"


class OutputSink:
    """One request's outputs, delivered from the engine thread, read on its asyncio loop. It keeps
    the newest output only: each is a cumulative snapshot, so a consumer slower than the engine
    skips steps and loses nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._latest: RequestOutput | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def put(self, item: RequestOutput | BaseException) -> None:
        """On its event loop (``deliver`` schedules it there)."""
        if isinstance(item, BaseException):
            self._error = item
        else:
            self._latest = item
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> RequestOutput:
        """The newest output not read yet, waiting for one; raises the loop's failure."""
        while self._latest is None and self._error is None:
            self._waiter = self._loop.create_future()
            await self._waiter
        if self._latest is not None:
            output, self._latest = self._latest, None
            return output
        raise self._error


def deliver(loop: asyncio.AbstractEventLoop, items: list[tuple[OutputSink, Any]]) -> bool:
    """Engine thread: hand one step's outputs (or errors) to the sinks of one event loop, in one
    wake-up of that loop. False when the loop is closed: nobody listens any more."""

    def put_all() -> None:
        for sink, item in items:
            sink.put(item)

    try:
        loop.call_soon_threadsafe(put_all)
    except RuntimeError:
        return False
    return True


class EngineLoop:
    """The engine thread and its command queue (see the module docstring). ``max_waiting`` bounds
    the scheduler's waiting queue at intake (None: unbounded)."""

    def __init__(self, engine: LLMEngine, max_waiting: int | None = None) -> None:
        self.check_max_waiting(max_waiting)
        self.engine = engine
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._commands: deque[tuple[Future, Callable[[LLMEngine], Any]]] = deque()
        self._state = LoopState.RUNNING
        self._error: BaseException | None = None
        self._sinks: dict[str, OutputSink] = {}  # engine thread only
        self._idle = threading.Event()  # set while the engine has no unfinished request
        self._idle.set()
        self._engine_closed = False
        self._thread = threading.Thread(target=self._run, name="loomlm-engine", daemon=True)
        self._thread.start()

    @staticmethod
    def check_max_waiting(max_waiting: int | None) -> None:
        if max_waiting is not None and (not isinstance(max_waiting, int) or max_waiting < 1):
            raise ValueError(
                f"max_waiting must be a positive int, or None for an unbounded queue; got {max_waiting!r}"
            )

    # -- any thread -----------------------------------------------------------------------------
    @property
    def state(self) -> LoopState:
        return self._state

    @property
    def error(self) -> BaseException | None:
        return self._error

    def call(self, fn: Callable[[LLMEngine], T]) -> Future[T]:
        """Run ``fn(engine)`` on the engine thread before its next step; its result or exception
        comes back through the Future. EngineStoppedError once the thread is gone."""
        future: Future[T] = Future()
        with self._cond:
            if self._state in (LoopState.STOPPED, LoopState.FAILED):
                raise self._stopped_error()
            self._commands.append((future, fn))
            self._cond.notify()
        return future

    def add(self, request_id: str, sink: OutputSink, prepare: Callable[[LLMEngine], dict]) -> Future[str]:
        """Queue a request: ``prepare(engine)`` (on the engine thread: tokenizing and chat templates
        use the engine's tokenizer, which is not safe to share between threads) returns the keyword
        arguments of ``engine.add_request``. Refused with QueueFullError at ``max_waiting``, or with
        EngineStoppedError once draining."""
        if self._state is not LoopState.RUNNING:
            raise self._stopped_error()

        def add_on_engine(engine: LLMEngine) -> str:
            if self._state is not LoopState.RUNNING:  # drain began after the command was queued
                raise self._stopped_error()
            waiting = engine.scheduler.num_waiting
            if self.max_waiting is not None and waiting >= self.max_waiting:
                raise QueueFullError(
                    f"{waiting} requests are waiting (max_waiting={self.max_waiting}); retry later"
                )
            if request_id in self._sinks:
                raise RequestError(f"request id {request_id!r} is already in flight; use another")
            engine.add_request(request_id=request_id, **prepare(engine))
            self._sinks[request_id] = sink
            self._idle.clear()
            return request_id

        return self.call(add_on_engine)

    def abort(self, request_ids: list[str], sink: OutputSink | None = None) -> Future[list[str]]:
        """Abort requests in the engine (their KV blocks and adapter slots are freed at once); their
        consumers get the finished ``abort`` output. With ``sink``, only if that sink still owns the
        id (a consumer that went away never aborts a later request that reuses its id)."""
        return self.call(lambda engine: self._abort(request_ids, sink))

    def abort_all(self) -> Future[list[str]]:
        return self.call(lambda engine: self._abort(list(self._sinks), None))

    def stop_admitting(self) -> None:
        with self._cond:
            if self._state is LoopState.RUNNING:
                self._state = LoopState.DRAINING

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no request is unfinished (or ``timeout`` seconds); True if idle."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        """Stop the thread after the commands already queued, join it and close the engine. Blocks:
        call it off the event loop. Requests still in flight get EngineStoppedError."""
        with self._cond:
            if self._state is not LoopState.FAILED:
                self._state = LoopState.STOPPED
            self._cond.notify()
        self._thread.join()
        if not self._engine_closed:
            self._engine_closed = True
            self.engine.close()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _stopped_error(self) -> EngineStoppedError:
        if self._state is LoopState.FAILED:
            error = EngineStoppedError(f"the engine loop failed: {self._error!r}; start a new AsyncLLM")
            error.__cause__ = self._error
            return error
        return EngineStoppedError(f"the AsyncLLM is {self._state.value} and takes no new requests")

    # -- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._commands and not self._should_stop() and not self._has_work():
                        self._cond.wait()
                    commands = list(self._commands)
                    self._commands.clear()
                for future, fn in commands:
                    if future.set_running_or_notify_cancel():  # False: its caller cancelled
                        try:
                            future.set_result(fn(self.engine))
                        except BaseException as error:  # belongs to the caller, e.g. a RequestError
                            future.set_exception(error)
                if self._should_stop():
                    break
                if self.engine.has_unfinished_requests():
                    self._dispatch(self.engine.step(only_finished=False))
                if not self.engine.has_unfinished_requests():
                    self._idle.set()
        except BaseException as error:  # a bug in a step: fail everything in flight, never hang
            logger.exception("the engine loop failed; failing every request in flight")
            with self._cond:
                self._state, self._error = LoopState.FAILED, error
        finally:
            self._close_out()

    def _should_stop(self) -> bool:
        return self._state is LoopState.STOPPED

    def _has_work(self) -> bool:
        return self.engine.has_unfinished_requests()

    def _abort(self, request_ids: list[str], sink: OutputSink | None) -> list[str]:
        ids = [rid for rid in request_ids if sink is None or self._sinks.get(rid) is sink]
        aborted = self.engine.abort_request(ids) if ids else []
        self._dispatch(aborted)
        for rid in ids:  # also those that had finished already (nothing left to abort)
            self._sinks.pop(rid, None)
        return [output.request_id for output in aborted]

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[OutputSink, RequestOutput]]] = {}
        for output in outputs:
            sink = self._sinks.get(output.request_id)
            if sink is None:
                continue
            if output.finished:
                del self._sinks[output.request_id]
            by_loop.setdefault(sink.loop, []).append((sink, output))
        gone = []
        for loop, items in by_loop.items():
            if not deliver(loop, items):
                gone += [out.request_id for _, out in items if self._sinks.pop(out.request_id, None)]
        if gone:  # their event loops are closed: free what they hold
            self.engine.abort_request(gone)

    def _close_out(self) -> None:
        """The thread ends: queued commands and every consumer still waiting get an error."""
        with self._cond:
            if self._state is not LoopState.FAILED:
                self._state = LoopState.STOPPED
            commands = list(self._commands)
            self._commands.clear()
        error = self._stopped_error()
        for future, _ in commands:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
        failure = self._error if self._error is not None else error
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[OutputSink, BaseException]]] = {}
        for sink in self._sinks.values():
            by_loop.setdefault(sink.loop, []).append((sink, failure))
        for loop, items in by_loop.items():
            deliver(loop, items)
        self._sinks.clear()
        self._idle.set()
