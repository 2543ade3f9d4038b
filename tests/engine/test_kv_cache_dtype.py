"""The KV cache's dtype: "auto" is the model's (bfloat16 under quantization="bf16"); a float32 model
on the CPU may keep a bfloat16 cache (half the bytes: twice the blocks for a byte budget) and then
decodes like the float32 cache, the C++ kernels reading it; anything else is refused up front."""

import pytest
import torch

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.dtype_choice import resolve_kv_cache_dtype
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams


def test_auto_follows_the_model_and_bf16_layers_take_a_bf16_cache():
    assert resolve_kv_cache_dtype("auto", "float32", "cpu", None) == "float32"
    assert resolve_kv_cache_dtype("auto", "float32", "cpu", "int8") == "float32"
    assert resolve_kv_cache_dtype("auto", "float32", "cpu", "bf16") == "bfloat16"
    assert resolve_kv_cache_dtype("auto", "bfloat16", "cuda", None) == "bfloat16"
    assert resolve_kv_cache_dtype("bfloat16", "float32", "cpu", None) == "bfloat16"
    assert resolve_kv_cache_dtype("float32", "float32", "cpu", "bf16") == "float32"


@pytest.mark.parametrize(
    ("requested", "dtype", "device"),
    [("float32", "bfloat16", "cpu"), ("bfloat16", "float32", "cuda"), ("float32", "float16", "cuda")],
)
def test_a_cache_unlike_the_model_is_refused_outside_a_float32_cpu_model(requested, dtype, device):
    with pytest.raises(ValueError, match="needs a float32 model on the CPU"):
        resolve_kv_cache_dtype(requested, dtype, device, None)


def test_an_unknown_cache_dtype_is_a_config_error():
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of"):
        CacheConfig(kv_cache_dtype="fp8")


def make_engine(model_dir, kv_cache_dtype="auto") -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=256, max_model_len=256),
            cache=CacheConfig(block_size=8, num_blocks=128, kv_cache_dtype=kv_cache_dtype),
        )
    )


def _finished(engine) -> dict:
    done = {}
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            done[output.request_id] = output.outputs[0]
    return done


def test_a_bfloat16_cache_holds_twice_the_blocks_of_a_byte_budget(tiny_llama_dir):
    def engine(kv_cache_dtype):
        cache = CacheConfig(block_size=8, kv_cache_bytes=2**22, kv_cache_dtype=kv_cache_dtype)
        return LLMEngine(EngineConfig(model=str(tiny_llama_dir), cache=cache))

    float_engine, bf16_engine = engine("float32"), engine("bfloat16")
    assert bf16_engine.kv_cache.pool.num_blocks == 2 * float_engine.kv_cache.pool.num_blocks
    key_cache, value_cache = bf16_engine.executor.runner.kv_caches[0]
    assert key_cache.dtype == value_cache.dtype == torch.bfloat16
    assert bf16_engine.config.cache.kv_cache_dtype == "bfloat16"
    assert "KV cache bfloat16" in bf16_engine.executor.runner.kernel_report


def test_a_bfloat16_cache_decodes_like_the_float32_cache(tiny_llama_dir):
    # Teacher-forced as the bf16-weight test does: at every position of the float32 engine's greedy
    # continuation, the bf16-cache engine's choice is float32's or a near-tie of it. Prompts long
    # enough for several blocks and chunks of prefill, then decode rows over the cache.
    prompt = list(range(1000, 1040))
    float_engine = make_engine(tiny_llama_dir)
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=5)
    float_engine.add_request(prompt, greedy, prompt_token_ids=prompt)
    (reference,) = _finished(float_engine).values()
    engine = make_engine(tiny_llama_dir, kv_cache_dtype="bfloat16")
    assert engine.executor.runner.kv_caches[0][0].dtype == torch.bfloat16
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    for i in range(12):
        prefix = prompt + reference.token_ids[:i]
        engine.add_request(prefix, params, prompt_token_ids=prefix, request_id=f"pos{i:02d}")
    chosen = [output.token_ids[0] for _, output in sorted(_finished(engine).items())]
    for i, token in enumerate(chosen):
        float_logprobs = {t: lp.logprob for t, lp in reference.logprobs[i].items()}
        best = max(float_logprobs.values())
        assert token in float_logprobs and float_logprobs[token] >= best - 0.1, (i, token, float_logprobs)
    assert sum(a == b for a, b in zip(chosen, reference.token_ids, strict=True)) >= 9
    # And free-running generation over the cache (decode steps) completes the request.
    engine.add_request(prompt, greedy, prompt_token_ids=prompt, request_id="free")
    (free,) = _finished(engine).values()
    assert len(free.token_ids) == 12


def test_bf16_layers_take_a_bf16_cache(tiny_llama_dir):
    # (The fused decode stack over a bfloat16 cache: test_fused_decode.py.)
    engine = LLMEngine(EngineConfig(model=str(tiny_llama_dir), quantization="bf16"))
    runner = engine.executor.runner
    assert runner.kv_caches[0][0].dtype == torch.bfloat16 and "KV cache bfloat16" in runner.kernel_report
    prompt = list(range(1000, 1020))
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    engine.add_request(prompt, params, prompt_token_ids=prompt)
    (output,) = _finished(engine).values()
    assert len(output.token_ids) == 6
