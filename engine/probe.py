"""Timing probes for the choices made per machine at load (dtype, linear kernels): one helper, so
every probe warms up and summarises its repeats the same way (candidates compared in interleaved rounds)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call (first-call
    dispatch, kernel and primitive selection)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_seconds_interleaved(fns: Sequence[Callable[[], object]], repeats: int = 5) -> list[float]:
    """Each ``fn``'s median wall time over ``repeats`` rounds that call every ``fn`` once in turn,
    after one warm-up call each: candidates compared this way share the machine's slow and fast
    stretches (a shared CPU drifts by more than the differences being measured)."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [statistics.median(fn_times) for fn_times in times]
