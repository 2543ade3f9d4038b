"""RoutedStream: a replica's ``RequestStream`` that gives the request's router slot back exactly once,
as soon as the request is over: finished, aborted (``cancel``, ``aclose``, ``async with``, a
cancelled consumer) or failed. Every way out of the stream runs through a ``finally`` that checks;
a stream dropped without being read to its end or closed gives its slot back when collected."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from loomlm.async_requests import RequestStream
from loomlm.engine.outputs import RequestOutput

S = TypeVar("S")


class _Release:
    """Calls ``release`` once, however many of the stream's exits (and its finalizer) reach it."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def __call__(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class RoutedStream(Generic[S]):
    """The stream of a request that runs on replica ``replica``; iterate it as the stream itself."""

    def __init__(self, stream: RequestStream[S], replica: int, release: Callable[[], None]) -> None:
        self._stream = stream
        self.replica = replica
        self.request_id = stream.request_id
        self._release = _Release(release)
        # Not at interpreter exit: the router goes with the process then.
        weakref.finalize(self, self._release).atexit = False

    @property
    def finished(self) -> bool:
        return self._stream.finished

    def __aiter__(self) -> RoutedStream[S]:
        return self

    async def __anext__(self) -> S:
        try:
            return await self._stream.__anext__()
        finally:
            self._release_if_over()

    async def result(self) -> RequestOutput:
        try:
            return await self._stream.result()
        finally:
            self._release_if_over()

    def cancel(self) -> None:
        try:
            self._stream.cancel()
        finally:
            self._release()

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> RoutedStream[S]:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.cancel()

    def _release_if_over(self) -> None:
        if self._stream.finished:
            self._release()
