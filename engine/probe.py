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


def median_ratios_interleaved(fns: Sequence[Callable[[], object]], repeats: int = 5) -> list[float]:
    """Each ``fn``'s wall time as a ratio to the first ``fn``'s in the same round, the median over
    ``repeats`` rounds that call every ``fn`` once in turn (after one warm-up call each). A shared
    CPU drifts by more than the differences being measured, and its slow stretches usually outlast
    a round: within a round the candidates see the same machine, so the ratio cancels the drift
    where separate medians of each candidate's times would not."""
    for fn in fns:
        fn()
    ratios: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        times = []
        for fn in fns:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        for fn_ratios, seconds in zip(ratios, times, strict=True):
            fn_ratios.append(seconds / times[0])
    return [statistics.median(fn_ratios) for fn_ratios in ratios]
