"""EngineMetrics: one engine's Prometheus metrics, named like vLLM's under the ``loomlm:`` prefix.

A dashboard built for vLLM ports by replacing ``vllm:`` with ``loomlm:``: the same names, types
and units, the ``model_name`` label on every series and ``finished_reason`` on
``request_success``. Each engine owns its ``CollectorRegistry`` (nothing is registered globally),
so two engines in one process never clash; a server serves
``prometheus_client.generate_latest(engine.metrics.registry)`` at /metrics. ``engine`` (optional,
vLLM's ``engine="0"``) adds a constant label to every series, so that the registries of several
engines (data-parallel replicas) can be exposed together without two series being the same.

Where each number comes from:

- ``record_step`` (engine thread, once per step): token counters, finish reasons and
  per-request latencies, from timestamps on the Request: ``arrival_time``, ``first_scheduled_time``
  (the scheduler, at first admission), ``first_token_time`` and ``last_token_time`` (set here). Its
  cost is a few attribute writes per request that got tokens; its inter-token latencies go into
  the histogram once per step (``StepHistogram``), not once per request.
- the gauges (running, waiting, KV usage, active adapters), read from the components when scraped
  or snapshotted (``current_state``), and lifetime counts kept where the event happens, read the
  same way (``lifetime_counts``): preemptions (scheduler), prefix-cache queries and hits in tokens (KV cache
  manager), grammar cache queries and hits (structured output manager), adapter loads (registry).
- grammar compile durations, observed from the compile thread when a compile ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from loomlm.engine.stats import StepHistogram, counter_value, histogram_summary

if TYPE_CHECKING:
    from loomlm.adapters.registry import AdapterRegistry
    from loomlm.engine.kv_cache_manager import KVCacheManager
    from loomlm.engine.outputs import SchedulerOutput
    from loomlm.engine.request import Request
    from loomlm.engine.scheduler import Scheduler
    from loomlm.engine.structured_output import StructuredOutputManager

PREFIX = "loomlm:"
FINISH_REASONS = ("stop", "length", "abort", "error")

# vLLM's buckets, with finer ones below where a CPU or small model lands (ITL, queue and request
# times under 0.3 s would otherwise share one bucket). Extra buckets break no PromQL query.
_TTFT_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
           20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
_ITL_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
          2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
_REQUEST_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
              20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
_COMPILE_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITERATION_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


def _1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value`` (vLLM's buckets for token counts)."""
    buckets, scale = [], 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_value:
                return buckets
            buckets.append(mantissa * scale)
        scale *= 10


class EngineMetrics:
    def __init__(self, model_name: str, max_model_len: int, engine: str | None = None) -> None:
        if engine is not None and (not isinstance(engine, str) or not engine):
            raise ValueError(
                f"engine must be a non-empty string label value (e.g. '0') or None, got {engine!r}"
            )
        self.model_name = model_name
        self.registry = CollectorRegistry()
        # The constant labels of every series: the model, and the engine when there are several.
        self.labels = {"model_name": model_name} | ({} if engine is None else {"engine": engine})
        label = list(self.labels.values())
        reg = {"registry": self.registry, "labelnames": list(self.labels)}

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, **reg).labels(*label)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(PREFIX + name, doc, buckets=buckets, **reg).labels(*label)

        self._prompt_tokens = counter("prompt_tokens", "Prompt tokens, counted at a request's first token.")
        self._generation_tokens = counter("generation_tokens", "Tokens generated, sampled or grammar-forced.")
        success = Counter(
            PREFIX + "request_success",
            "Finished requests by finish reason (stop, length, abort, error).",
            registry=self.registry,
            labelnames=[*self.labels, "finished_reason"],
        )
        # Every reason is created now so that each series exists (at 0) before its first request.
        self._success = {reason: success.labels(*label, reason) for reason in FINISH_REASONS}
        self._ttft = histogram(
            "time_to_first_token_seconds", "Seconds from arrival to the first generated token.", _TTFT_S
        )
        # One observation per request per step that gave it tokens (a jump-forward run is one):
        # the only per-step-per-request metric, so it takes a step's values at once.
        self._itl = StepHistogram(
            PREFIX + "inter_token_latency_seconds",
            "Seconds between steps that gave a request tokens.",
            _ITL_S,
            self.labels,
        )
        self.registry.register(self._itl)
        self._e2e = histogram("e2e_request_latency_seconds", "Seconds from arrival to finish.", _REQUEST_S)
        self._queue = histogram(
            "request_queue_time_seconds", "Seconds from arrival to first admission.", _REQUEST_S
        )
        self._prefill = histogram(
            "request_prefill_time_seconds", "Seconds from first admission to the first token.", _REQUEST_S
        )
        self._decode = histogram(
            "request_decode_time_seconds", "Seconds from the first token to the last.", _REQUEST_S
        )
        self._inference = histogram(
            "request_inference_time_seconds", "Seconds from first admission to the last token.", _REQUEST_S
        )
        token_buckets = _1_2_5_buckets(max_model_len)
        self._request_prompt = histogram(
            "request_prompt_tokens", "Prompt tokens per finished request.", token_buckets
        )
        self._request_generation = histogram(
            "request_generation_tokens", "Generated tokens per finished request.", token_buckets
        )
        # vLLM's name, _total suffix included; here: the tokens the step computed.
        self._iteration_tokens = histogram(
            "iteration_tokens_total", "Tokens computed per engine step.", _ITERATION_TOKENS
        )
        self.grammar_compile_seconds = histogram(
            "grammar_compile_seconds",
            "Histogram of grammar compile time in seconds, from submit (queueing included).",
            _COMPILE_S,
        )
        self._scheduler: Scheduler | None = None
        self._kv_cache: KVCacheManager | None = None
        self._structured_output: StructuredOutputManager | None = None
        self._adapters: AdapterRegistry | None = None

    def attach(
        self,
        scheduler: Scheduler,
        kv_cache: KVCacheManager,
        structured_output: StructuredOutputManager | None,
        adapters: AdapterRegistry | None,
    ) -> None:
        """Read gauges and lifetime counts from these components (the engine's, built after this
        object because the structured output manager reports compiles into it)."""
        self._scheduler, self._kv_cache = scheduler, kv_cache
        self._structured_output, self._adapters = structured_output, adapters
        self.registry.register(_LifetimeCollector(self))

    # -- recording (engine thread) ------------------------------------------------------------------
    def record_step(self, scheduler_output: SchedulerOutput, updated: Sequence[Request]) -> None:
        """One step's effects: ``updated`` is what ``Scheduler.update`` returned (requests that got
        tokens or finished this step)."""
        now = time.monotonic()
        prompt_tokens = generation_tokens = 0
        itls: list[float] = []
        for request in updated:
            num_new = request.num_output_tokens - request.num_recorded_output_tokens
            if num_new:
                request.num_recorded_output_tokens += num_new
                generation_tokens += num_new
                if request.first_token_time is None:
                    request.first_token_time = now
                    prompt_tokens += len(request.prompt_token_ids)  # counted once: recompute is not new
                    self._ttft.observe(now - request.arrival_time)
                else:
                    itls.append(now - request.last_token_time)
                request.last_token_time = now
            if request.is_finished:
                self._record_finished(request, now)
        if prompt_tokens:
            self._prompt_tokens.inc(prompt_tokens)
        if generation_tokens:
            self._generation_tokens.inc(generation_tokens)
        if itls:
            self._itl.observe_many(itls)
        if scheduler_output.num_scheduled_tokens:
            self._iteration_tokens.observe(scheduler_output.num_scheduled_tokens)

    def record_finished(self, requests: Sequence[Request]) -> None:
        """Requests finished outside a step (aborted)."""
        now = time.monotonic()
        for request in requests:
            self._record_finished(request, now)

    def _record_finished(self, request: Request, now: float) -> None:
        self._success[request.finish_reason].inc()
        self._e2e.observe(now - request.arrival_time)
        scheduled = request.first_scheduled_time
        if scheduled is not None:
            self._queue.observe(scheduled - request.arrival_time)
        first, last = request.first_token_time, request.last_token_time
        if first is not None and scheduled is not None:  # a request that never got a token has no phases
            self._prefill.observe(first - scheduled)
            self._decode.observe(last - first)
            self._inference.observe(last - scheduled)
            self._request_prompt.observe(len(request.prompt_token_ids))
            self._request_generation.observe(request.num_output_tokens)

    # -- reading --------------------------------------------------------------------------------------
    def current_state(self) -> dict[str, float]:
        """The gauges, read from the components when asked (no step spends anything on them)."""
        scheduler = self._scheduler
        return {
            "num_running": scheduler.num_running,
            "num_waiting": scheduler.num_waiting,
            "kv_cache_usage": self._kv_cache.pool.usage,
            "active_adapters": self._adapters.num_active() if self._adapters is not None else 0,
        }

    def lifetime_counts(self) -> dict[str, int]:
        """The counts the components keep themselves, by metric name without the prefix."""
        so, adapters = self._structured_output, self._adapters
        return {
            "num_preemptions": self._scheduler.num_preemptions,
            "prefix_cache_queries": self._kv_cache.prefix_cache_queries,
            "prefix_cache_hits": self._kv_cache.prefix_cache_hits,
            "grammar_cache_queries": so.num_grammar_queries if so is not None else 0,
            "grammar_cache_hits": so.num_grammar_hits if so is not None else 0,
            "adapter_loads": adapters.num_loads if adapters is not None else 0,
            "adapter_rereads": adapters.num_rereads if adapters is not None else 0,
            "adapter_slot_loads": adapters.num_slot_writes if adapters is not None else 0,
        }

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of every number (no side effects): current state, lifetime counts, and
        count/sum/mean/p50/p99 of each latency (quantiles estimated from the histogram buckets, as
        Prometheus' histogram_quantile does)."""
        compiles = histogram_summary(self.grammar_compile_seconds)
        return {
            **self.current_state(),
            **self.lifetime_counts(),
            "prompt_tokens": int(counter_value(self._prompt_tokens)),
            "generation_tokens": int(counter_value(self._generation_tokens)),
            "finished": {reason: int(counter_value(c)) for reason, c in self._success.items()},
            "grammar_compiles": compiles["count"],
            "grammar_compile_seconds": compiles["sum"],
            "time_to_first_token": histogram_summary(self._ttft),
            "inter_token_latency": histogram_summary(self._itl),
            "e2e_request_latency": histogram_summary(self._e2e),
            "request_queue_time": histogram_summary(self._queue),
        }


_GAUGE_DOCS = (
    ("num_requests_running", "num_running", "Requests admitted and running (in the step batches)."),
    ("num_requests_waiting", "num_waiting", "Requests queued for admission (new or preempted)."),
    ("kv_cache_usage_perc", "kv_cache_usage", "Fraction of KV-cache blocks in use (0 to 1)."),
    ("active_adapters", "active_adapters", "LoRA adapters in a device slot pinned by a running request."),
)
_LIFETIME_DOCS = (
    ("num_preemptions", "Requests preempted for KV blocks (recomputed later)."),
    ("prefix_cache_queries", "Tokens looked up in the prefix cache, per admission."),
    ("prefix_cache_hits", "Tokens served from the prefix cache, per admission."),
    ("grammar_cache_queries", "Grammar compile requests (one per request with a response format)."),
    ("grammar_cache_hits", "Grammar compile requests that started no compile (cached or in flight)."),
    ("adapter_slot_loads", "LoRA adapters written into a device slot (the adapter was in no slot)."),
)


class _LifetimeCollector:
    """Exposes ``EngineMetrics.current_state`` as gauges and ``lifetime_counts`` as counters, read
    at scrape time: the components count, this only reports, so no step spends anything on them."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        state, counts = self._metrics.current_state(), self._metrics.lifetime_counts()
        names, label = list(self._metrics.labels), list(self._metrics.labels.values())
        for name, key, doc in _GAUGE_DOCS:
            gauge = GaugeMetricFamily(PREFIX + name, doc, labels=names)
            gauge.add_metric(label, state[key])
            yield gauge
        for name, doc in _LIFETIME_DOCS:
            family = CounterMetricFamily(PREFIX + name, doc, labels=names)
            family.add_metric(label, counts[name])
            yield family
        loads = CounterMetricFamily(
            PREFIX + "adapter_loads",
            "LoRA adapters read from disk: by load_adapter, or re-read after a CPU-cache eviction.",
            labels=[*names, "reason"],
        )
        loads.add_metric([*label, "load"], counts["adapter_loads"])
        loads.add_metric([*label, "reread"], counts["adapter_rereads"])
        yield loads
