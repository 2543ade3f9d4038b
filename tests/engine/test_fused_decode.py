"""The fused decode stack (all-decode steps of a quantized model in one C++ call) gives exactly
the module path's tokens and log-probabilities: the same ops in the same order. It runs only where
it applies: decode steps of a quantized model, not prefill chunks, nor float models."""

import pytest
import torch
from test_model_families import build

from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.models import bf16_weights
from loomlm.engine.sampling_params import SamplingParams
from loomlm.kernels.cpu_gemm_bf16 import bf16_panels_available
from loomlm.kernels.native import _C

pytestmark = pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
BF16 = pytest.param(
    "bf16", marks=pytest.mark.skipif(not bf16_panels_available(), reason="no AVX-512 BF16 here")
)


@pytest.fixture(autouse=True)
def bf16_on_loomlm_panels(monkeypatch):
    # Each bf16 layer shape's kernel is timed at load, and the stack runs only loomlm's panels: on a
    # busy machine oneDNN can time faster on the tiny model's shapes. Pinned, so no test here rests
    # on a timing.
    if bf16_panels_available():
        monkeypatch.setattr(bf16_weights, "_fastest_kernel", lambda shape: "loomlm")


def make_engine(model_dir, kv_cache_dtype="auto", **options) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64, max_model_len=256),
            cache=CacheConfig(block_size=8, num_blocks=96, kv_cache_dtype=kv_cache_dtype),
            **options,
        )
    )


def run(engine, adapters=(None,) * 4) -> list[tuple[list[int], list]]:
    params = SamplingParams(temperature=0, max_tokens=14, ignore_eos=True, logprobs=3)
    for i, (length, adapter) in enumerate(zip((3, 17, 40, 9), adapters, strict=True)):
        prompt = [(11 * i + 5 * j) % 40000 + 100 for j in range(length)]  # contexts of 1-7 blocks
        engine.add_request(prompt, params, prompt_token_ids=prompt, adapter=adapter)
    done = {}
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            done[output.request_id] = output.outputs[0]
    return [(done[k].token_ids, done[k].logprobs) for k in sorted(done)]


def count_calls(engine) -> list[int]:
    fused = engine.executor.runner.fused_decode
    calls, forward = [0], fused.forward

    def counted(*args):
        calls[0] += 1
        return forward(*args)

    fused.forward = counted
    return calls


@pytest.mark.parametrize("mode", ["int4", "q8_0", "int8", BF16])
def test_the_fused_stack_equals_the_module_path(tiny_llama_dir, mode):
    fused, modules = (
        make_engine(tiny_llama_dir, quantization=mode),
        make_engine(tiny_llama_dir, quantization=mode),
    )
    calls = count_calls(fused)
    modules.executor.runner.fused_decode = None
    assert run(fused) == run(modules)
    assert calls[0] > 10  # the decode steps went through the stack (prefill chunks did not)


def test_the_stack_reads_and_writes_a_bfloat16_cache_as_the_module_path_does(tiny_llama_dir):
    fused, modules = (make_engine(tiny_llama_dir, "bfloat16", quantization="int8") for _ in range(2))
    assert fused.executor.runner.kv_caches[0][0].dtype == torch.bfloat16
    calls = count_calls(fused)
    modules.executor.runner.fused_decode = None
    assert run(fused) == run(modules)
    assert calls[0] > 10


@pytest.mark.parametrize("mode", ["int8", "int4", BF16])
def test_adapter_steps_run_in_the_stack_and_equal_the_module_path(tiny_llama_dir, tiny_lora_adapters, mode):
    # all8 targets every module; rs4 only q/v/down of layer 1 (other layers and groups add nothing);
    # re16 k/o/up; one request has no adapter.
    engines = []
    for _ in range(2):
        engine = make_engine(tiny_llama_dir, quantization=mode, lora=LoRAConfig(enable=True, max_loras=4))
        for name in ("all8", "rs4", "re16"):
            engine.load_adapter(name, str(tiny_lora_adapters[name]))
        engines.append(engine)
    fused, modules = engines
    calls = count_calls(fused)
    modules.executor.runner.fused_decode = None
    adapters = ("all8", "rs4", None, "re16")
    got = run(fused, adapters)
    assert got == run(modules, adapters)
    assert calls[0] > 10  # the adapter decode steps went through the stack
    # A fresh engine: on `modules` the prompts would now hit the prefix cache, and a recomputed last
    # block runs as rows of the decode kernel instead of one SDPA chunk (equal to float rounding).
    base = run(make_engine(tiny_llama_dir, quantization=mode))
    assert [got[i] != base[i] for i in range(4)] == [True, True, False, True]  # the updates were added


@pytest.mark.parametrize("mode", ["int4", BF16])
def test_qkv_biases_are_applied_in_the_stack(tmp_path_factory, smollm2_dir, mode):
    qwen2 = build("qwen2", tmp_path_factory, smollm2_dir)
    fused, modules = make_engine(qwen2, quantization=mode), make_engine(qwen2, quantization=mode)
    modules.executor.runner.fused_decode = None
    assert run(fused) == run(modules)


def test_float_models_keep_the_module_path(tiny_llama_dir):
    assert make_engine(tiny_llama_dir).executor.runner.fused_decode is None
