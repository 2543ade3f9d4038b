"""Plain-number reads of Prometheus metrics for ``LLMEngine.stats()`` (a counter's value; a
histogram's count, sum, mean and estimated quantiles: pure queries through the public ``collect()``),
and ``StepHistogram``, a histogram fed one batch per engine step."""

from __future__ import annotations

import itertools
import math
import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

_QUANTILES = {"p50": 0.5, "p99": 0.99}


def counter_value(metric: Any) -> float:
    """The value of a counter (an unlabeled one, or one child of a labeled one)."""
    return next(s.value for s in metric.collect()[0].samples if s.name.endswith("_total"))


def histogram_summary(metric: Any) -> dict[str, float | int | None]:
    """count, sum, mean, p50 and p99 of a histogram (one child of a labeled one); the averages and
    quantiles are None before the first observation."""
    buckets: list[tuple[float, float]] = []
    count, total = 0, 0.0
    for sample in metric.collect()[0].samples:
        if sample.name.endswith("_bucket"):
            buckets.append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            count = int(sample.value)
        elif sample.name.endswith("_sum"):
            total = sample.value
    summary: dict[str, float | int | None] = {"count": count, "sum": total}
    summary["mean"] = total / count if count else None
    for key, q in _QUANTILES.items():
        summary[key] = bucket_quantile(q, buckets)
    return summary


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile estimated from cumulative ``(upper bound, count)`` buckets, ending with +Inf,
    as Prometheus' ``histogram_quantile`` does: linear within the bucket holding the rank, the
    highest finite bound when the rank falls in +Inf. None when nothing was observed."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


class StepHistogram:
    """A Prometheus histogram (a collector: register it in a registry) that takes a step's values
    at once. prometheus_client's ``Histogram.observe`` takes locks per value (~3 us); the
    inter-token latency has one value per running request per step, so 256 requests would cost
    ~0.8 ms a step. Here the lock is taken once per step and a value costs a bisect."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], labels: dict[str, str]):
        self._name, self._documentation, self._labels = name, documentation, labels
        self._bounds = tuple(float(b) for b in buckets)  # finite, ascending; +Inf is implicit
        self._counts = [0] * (len(self._bounds) + 1)  # per bucket, not cumulative; last: over every bound
        self._sum = 0.0
        self._lock = threading.Lock()  # a scrape reads from another thread

    def observe_many(self, values: Sequence[float]) -> None:
        positions = [bisect_left(self._bounds, value) for value in values]  # le: value <= bound
        total = sum(values)
        with self._lock:
            for position in positions:
                self._counts[position] += 1
            self._sum += total

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        bounds = [floatToGoString(b) for b in (*self._bounds, math.inf)]
        family = HistogramMetricFamily(self._name, self._documentation, labels=list(self._labels))
        buckets = list(zip(bounds, itertools.accumulate(counts), strict=True))
        family.add_metric(list(self._labels.values()), buckets, total)
        return [family]
