"""The waiting queue: FCFS (a deque) or priority (a heap), with O(1) removal on abort.

Removal is lazy: an aborted request is remembered and dropped when it reaches the front, so an
abort never rebuilds the queue. Requests put back in front (preempted, or skipped because they are
not ready) keep their order."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol

from loomlm.engine.request import Request


class RequestQueue(Protocol):
    def add(self, request: Request) -> None:
        """Queue a new request (at the back under FCFS)."""

    def prepend(self, requests: Iterable[Request]) -> None:
        """Put requests back in front, keeping their order (preempted or skipped ones)."""

    def peek(self) -> Request:
        """The next request; IndexError when empty."""

    def pop(self) -> Request:
        """Remove and return the next request; IndexError when empty."""

    def remove(self, request: Request) -> None:
        """Drop a queued request (abort), in O(1)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Request]: ...


class _LazyRemoval:
    """Bookkeeping shared by both queues: removed requests and the live count."""

    def __init__(self) -> None:
        self._removed: set[Request] = set()
        self._size = 0

    def remove(self, request: Request) -> None:
        self._removed.add(request)
        self._size -= 1

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def _is_removed(self, request: Request) -> bool:
        if request in self._removed:
            self._removed.discard(request)
            return True
        return False


class FCFSQueue(_LazyRemoval):
    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[Request] = deque()

    def add(self, request: Request) -> None:
        self._queue.append(request)
        self._size += 1

    def prepend(self, requests: Iterable[Request]) -> None:
        ordered = list(requests)
        self._queue.extendleft(reversed(ordered))
        self._size += len(ordered)

    def peek(self) -> Request:
        while self._is_removed(self._queue[0]):
            self._queue.popleft()
        return self._queue[0]

    def pop(self) -> Request:
        request = self.peek()
        self._queue.popleft()
        self._size -= 1
        return request

    def __iter__(self) -> Iterator[Request]:
        return (r for r in self._queue if r not in self._removed)


class PriorityQueue(_LazyRemoval):
    """Lower ``priority`` first, then arrival; equal keys stay first-in first-out."""

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[int, float, int, int, Request]] = []
        self._num_pushed = 0

    def add(self, request: Request) -> None:
        self._num_pushed += 1
        key = (request.priority, request.arrival_time, request.arrival_index, self._num_pushed, request)
        heapq.heappush(self._heap, key)
        self._size += 1

    def prepend(self, requests: Iterable[Request]) -> None:
        # A heap has no front: a request goes back to its own rank.
        for request in requests:
            self.add(request)

    def peek(self) -> Request:
        while self._is_removed(self._heap[0][-1]):
            heapq.heappop(self._heap)
        return self._heap[0][-1]

    def pop(self) -> Request:
        request = self.peek()
        heapq.heappop(self._heap)
        self._size -= 1
        return request

    def __iter__(self) -> Iterator[Request]:
        return (entry[-1] for entry in sorted(self._heap) if entry[-1] not in self._removed)


def make_request_queue(policy: str) -> RequestQueue:
    if policy == "fcfs":
        return FCFSQueue()
    if policy == "priority":
        return PriorityQueue()
    raise ValueError(f"scheduling policy must be 'fcfs' or 'priority', got {policy!r}")
