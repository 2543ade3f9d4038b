"""Timing probes for the choices made per machine at load (dtype, linear kernels): one helper, so
every probe warms up and summarises its repeats the same way."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


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
