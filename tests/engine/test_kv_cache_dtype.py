"""The KV cache's dtype: "auto" is the model's (bfloat16 under quantization="bf16"); a float32 model
on the CPU may keep a bfloat16 cache (half the bytes: twice the blocks for a byte budget) and then
decodes like the float32 cache, the C++ kernels reading it; anything else is refused up front."""

import pytest
import torch
from greedy_support import assert_teacher_forced_near, finished, greedy_reference

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
    # A prompt of several blocks, prefilled in chunks, then decode rows over the cache.
    prompt = list(range(1000, 1040))
    reference = greedy_reference(make_engine(tiny_llama_dir), prompt)
    engine = make_engine(tiny_llama_dir, kv_cache_dtype="bfloat16")
    assert engine.executor.runner.kv_caches[0][0].dtype == torch.bfloat16
    assert_teacher_forced_near(engine, prompt, reference, min_equal=9)
    # And free-running generation over the cache (decode steps) completes the request.
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    engine.add_request(prompt, greedy, prompt_token_ids=prompt, request_id="free")
    (free,) = finished(engine).values()
    assert len(free.token_ids) == 12


def test_bf16_layers_take_a_bf16_cache(tiny_llama_dir):
    # (The fused decode stack over a bfloat16 cache: test_fused_decode.py.)
    engine = LLMEngine(EngineConfig(model=str(tiny_llama_dir), quantization="bf16"))
    runner = engine.executor.runner
    assert runner.kv_caches[0][0].dtype == torch.bfloat16 and "KV cache bfloat16" in runner.kernel_report
    prompt = list(range(1000, 1020))
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    engine.add_request(prompt, params, prompt_token_ids=prompt)
    (output,) = finished(engine).values()
    assert len(output.token_ids) == 6
