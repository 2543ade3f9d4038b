"""Engine metrics: exact counter values after driving a tiny random Llama, vLLM-style names in the
Prometheus text, one registry per engine, and the bucket-quantile estimate."""

import math

import pytest
from engine_support import run_to_completion
from prometheus_client import generate_latest

from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.stats import bucket_quantile
from loomlm.grammar.specs import Regex

GREEDY = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)


def make_engine(model_dir, *, block_size=8, num_blocks=64, lora=None) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_model_len=128, max_num_batched_tokens=64, max_num_seqs=8),
            cache=CacheConfig(block_size=block_size, num_blocks=num_blocks),
            lora=lora or LoRAConfig(),
            jump_forward=False,  # one token per request per step: ITL counts are exact
        )
    )


def sample(engine: LLMEngine, name: str, **labels) -> float | None:
    return engine.metrics_registry.get_sample_value(name, {"model_name": engine.metrics.model_name, **labels})


def grammar_counts(stats: dict) -> tuple[int, int, int]:
    return stats["grammar_cache_queries"], stats["grammar_cache_hits"], stats["grammar_compiles"]


def prompt(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


@pytest.fixture
def engine(tiny_llama_dir):
    engine = make_engine(tiny_llama_dir)
    yield engine
    engine.close()


def test_token_counters_finish_reasons_and_latencies(engine):
    prompts = {"a": prompt(100, 7), "b": prompt(300, 19)}
    for request_id, ids in prompts.items():
        engine.add_request(ids, GREEDY, request_id=request_id, prompt_token_ids=ids)
    # Grammar termination ends these: finish reason "stop". The second submit of the same regex
    # joins the compile in flight (or, had it finished, hits the cache): one compile either way.
    constrained = SamplingParams(max_tokens=8, response_format=Regex("[ab]{3}"))
    for request_id, ids in (("g1", prompt(500, 4)), ("g2", prompt(600, 4))):
        engine.add_request(ids, constrained, request_id=request_id, prompt_token_ids=ids)
    outputs = run_to_completion(engine)
    num_output_tokens = sum(len(o.outputs[0].token_ids) for o in outputs.values())
    stats = engine.stats()

    assert stats["prompt_tokens"] == 7 + 19 + 4 + 4
    assert stats["generation_tokens"] == num_output_tokens
    assert sample(engine, "loomlm:generation_tokens_total") == num_output_tokens
    assert stats["finished"] == {"stop": 2, "length": 2, "abort": 0, "error": 0}
    assert sample(engine, "loomlm:request_success_total", finished_reason="length") == 2
    assert sample(engine, "loomlm:request_success_total", finished_reason="stop") == 2
    # One TTFT, e2e and queue time per request; one ITL per token after each request's first.
    for key in ("time_to_first_token", "e2e_request_latency", "request_queue_time"):
        assert stats[key]["count"] == 4, key
    assert sample(engine, "loomlm:time_to_first_token_seconds_count") == 4
    assert stats["inter_token_latency"]["count"] == num_output_tokens - 4
    ttft, e2e = stats["time_to_first_token"], stats["e2e_request_latency"]
    assert 0 < ttft["sum"] <= e2e["sum"]
    assert ttft["mean"] == pytest.approx(ttft["sum"] / 4) and ttft["p50"] > 0
    assert grammar_counts(stats) == (2, 1, 1)  # queries, hits, compiles
    assert stats["grammar_compile_seconds"] > 0
    engine.add_request("x", SamplingParams(max_tokens=8, response_format=Regex("[ab]{3}")))
    run_to_completion(engine)
    stats = engine.stats()
    assert grammar_counts(stats) == (3, 2, 1)  # a cache hit
    # Nothing left running: the gauges say so.
    assert sample(engine, "loomlm:num_requests_running") == 0
    assert sample(engine, "loomlm:kv_cache_usage_perc") == 0.0


def test_gauges_follow_each_step_and_an_abort_is_counted(engine):
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    for i, request_id in enumerate(("a", "b", "c")):
        ids = prompt(1000 + 50 * i, 9)
        engine.add_request(ids, params, request_id=request_id, prompt_token_ids=ids)
    engine.step()
    assert sample(engine, "loomlm:num_requests_running") == 3
    assert sample(engine, "loomlm:num_requests_waiting") == 0
    assert sample(engine, "loomlm:kv_cache_usage_perc") == engine.kv_cache.pool.usage > 0
    engine.abort_request(["b"])
    assert sample(engine, "loomlm:num_requests_running") == 2  # updated by the abort, not the next step
    run_to_completion(engine)
    assert engine.stats()["finished"] == {"stop": 0, "length": 2, "abort": 1, "error": 0}
    assert sample(engine, "loomlm:request_success_total", finished_reason="abort") == 1


def test_prefix_cache_queries_and_hits_count_tokens(engine):
    shared = prompt(2000, 40)  # 5 full blocks of 8
    engine.add_request(shared, GREEDY, prompt_token_ids=shared)
    run_to_completion(engine)
    assert (engine.stats()["prefix_cache_queries"], engine.stats()["prefix_cache_hits"]) == (40, 0)
    longer = shared + prompt(5000, 5)
    engine.add_request(longer, GREEDY, request_id="second", prompt_token_ids=longer)
    outputs = run_to_completion(engine)
    assert outputs["second"].num_cached_tokens == 40
    stats = engine.stats()
    assert (stats["prefix_cache_queries"], stats["prefix_cache_hits"]) == (40 + 45, 40)
    assert sample(engine, "loomlm:prefix_cache_hits_total") == 40
    assert sample(engine, "loomlm:prefix_cache_queries_total") == 85


def test_preemption_is_counted_and_recompute_counts_no_token_twice(tiny_llama_dir):
    # 6 blocks of 4 tokens; each request grows to 16 tokens (4 blocks): both cannot stay running.
    engine = make_engine(tiny_llama_dir, block_size=4, num_blocks=6)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    prompts = [prompt(700, 8), prompt(900, 8)]
    for ids in prompts:
        engine.add_request(ids, params, prompt_token_ids=ids)
    outputs = run_to_completion(engine)
    engine.close()
    stats = engine.stats()
    assert stats["num_preemptions"] >= 1
    assert sample(engine, "loomlm:num_preemptions_total") == stats["num_preemptions"]
    assert stats["prompt_tokens"] == 16  # not again for the recomputed prompt
    assert stats["generation_tokens"] == sum(len(o.outputs[0].token_ids) for o in outputs.values()) == 16
    assert stats["finished"]["length"] == 2
    # A re-admission after preemption is a prefix-cache query of its own.
    assert stats["prefix_cache_queries"] > 16


def test_prometheus_text_uses_vllm_names_under_the_loomlm_prefix(engine):
    engine.add_request("hello", GREEDY)
    run_to_completion(engine)
    text = generate_latest(engine.metrics_registry).decode()
    for name in (
        "loomlm:num_requests_running",
        "loomlm:num_requests_waiting",
        "loomlm:kv_cache_usage_perc",
        "loomlm:prompt_tokens_total",
        "loomlm:generation_tokens_total",
        'loomlm:request_success_total{finished_reason="length"',
        "loomlm:num_preemptions_total",
        "loomlm:prefix_cache_queries_total",
        "loomlm:prefix_cache_hits_total",
        "loomlm:time_to_first_token_seconds_bucket",
        "loomlm:inter_token_latency_seconds_count",
        "loomlm:e2e_request_latency_seconds_sum",
        "loomlm:request_queue_time_seconds_count",
        "loomlm:request_prefill_time_seconds_count",
        "loomlm:request_decode_time_seconds_count",
        "loomlm:request_prompt_tokens_bucket",
        "loomlm:iteration_tokens_total_bucket",
        "loomlm:grammar_compile_seconds_count",
        "loomlm:grammar_cache_queries_total",
        "loomlm:grammar_cache_hits_total",
        "loomlm:active_adapters",
        'loomlm:adapter_loads_total{model_name="',
    ):
        assert name in text, name
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(line.startswith("loomlm:") for line in series)
    assert all(f'model_name="{engine.metrics.model_name}"' in line for line in series)


def test_two_engines_keep_independent_registries(tiny_llama_dir):
    first, second = make_engine(tiny_llama_dir), make_engine(tiny_llama_dir)
    try:
        assert first.metrics_registry is not second.metrics_registry
        ids = prompt(40, 6)
        first.add_request(ids, GREEDY, prompt_token_ids=ids)
        run_to_completion(first)
        assert sample(first, "loomlm:prompt_tokens_total") == 6
        assert sample(second, "loomlm:prompt_tokens_total") == 0
        assert second.stats()["finished"]["length"] == 0
        assert "loomlm:prompt_tokens_total" in generate_latest(second.metrics_registry).decode()
    finally:
        first.close()
        second.close()


def test_adapter_loads_rereads_and_active_adapters(tiny_llama_dir, tiny_lora_adapters):
    lora = LoRAConfig(enable=True, max_loras=2, max_lora_rank=16, max_cpu_loras=2)
    engine = make_engine(tiny_llama_dir, lora=lora)
    for name in ("all8", "rs4", "re16"):  # the CPU cache holds 2: all8 leaves it
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    assert sample(engine, "loomlm:adapter_loads_total", reason="load") == 3
    for i, name in enumerate(("rs4", "re16")):
        ids = prompt(60 + 20 * i, 6)
        engine.add_request(ids, GREEDY, prompt_token_ids=ids, adapter=name)
    engine.step()
    assert sample(engine, "loomlm:active_adapters") == 2
    run_to_completion(engine)
    assert sample(engine, "loomlm:active_adapters") == 0
    assert sample(engine, "loomlm:adapter_loads_total", reason="reread") == 0
    engine.add_request(prompt(90, 6), GREEDY, prompt_token_ids=prompt(90, 6), adapter="all8")
    run_to_completion(engine)  # all8 is read from its directory again
    engine.close()
    stats = engine.stats()
    assert (stats["adapter_loads"], stats["adapter_rereads"]) == (3, 1)
    assert sample(engine, "loomlm:adapter_loads_total", reason="reread") == 1


def test_bucket_quantile_interpolates_like_histogram_quantile():
    buckets = [(0.1, 2.0), (0.2, 6.0), (math.inf, 8.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 4: halfway through (0.1, 0.2]
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.1)
    assert bucket_quantile(0.99, buckets) == 0.2  # in +Inf: the highest finite bound
    assert bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
