"""lora_dtype="int8": adapters rounded to int8 per rank component, read by the C++ path as a packed
int8 copy. On the float32 base the engine's logits equal PEFT's on a copy of each adapter rounded the
same way; on the int8 base (which quantizes activations, and so may the adapters' VNNI kernels) its
greedy choices follow PEFT's; decode steps run the int8 copy, and the option is refused where it
cannot run."""

import shutil

import pytest
import torch
from lora_support import assert_peft_parity, prompts, record_logits, run
from safetensors.torch import load_file, save_file

from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams
from loomlm.kernels.native import _C

NAMES = ("all8", "rs4", "re16", "all8b")


def rounded(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Symmetric int8 rounding with one scale per slice along ``dim`` (reduced)."""
    scale = w.abs().amax(dim=dim, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / scale).clamp(-127, 127) * scale


def rounded_adapter(source, target):
    """A copy of a PEFT adapter with A's rows and B's columns (one per rank component) rounded."""
    shutil.copytree(source, target)
    for path in target.iterdir():
        if path.suffix not in (".safetensors", ".bin"):
            continue
        tensors = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        for key, value in tensors.items():
            if "lora_A" in key:
                tensors[key] = rounded(value, dim=1)
            elif "lora_B" in key:
                tensors[key] = rounded(value, dim=0)
        save_file(tensors, path) if path.suffix == ".safetensors" else torch.save(tensors, path)
    return target


@pytest.fixture(scope="module")
def rounded_adapters(tmp_path_factory, tiny_lora_adapters):
    root = tmp_path_factory.mktemp("rounded")
    return {name: rounded_adapter(tiny_lora_adapters[name], root / name) for name in NAMES}


def make_engine(model_dir, **options):
    config = EngineConfig(
        model=str(model_dir),
        scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=64, max_model_len=256),
        cache=CacheConfig(block_size=8, num_blocks=256, enable_prefix_caching=False),
        lora=LoRAConfig(enable=True, max_loras=4, max_lora_rank=16, lora_dtype="int8"),
        **options,
    )
    return LLMEngine(config)


@pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
def test_int8_adapters_match_peft_on_rounded_adapters(
    tiny_llama_dir, tiny_lora_adapters, rounded_adapters, peft_logits, monkeypatch
):
    engine = make_engine(tiny_llama_dir)
    for name in NAMES:
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    rows = record_logits(engine, monkeypatch)
    weights = engine.executor.runner.lora_weights
    make_step, plans = weights.step, []
    monkeypatch.setattr(weights, "step", lambda meta: plans.append(make_step(meta)) or plans[-1])
    names = [*NAMES, None, "all8", "all8b", "re16"]
    items = [(f"q{i}", p, names[i]) for i, p in enumerate(prompts(3, 8, 5, 30))]
    outputs = run(engine, items, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    assert_peft_parity(outputs, rows, items, tiny_llama_dir, rounded_adapters, peft_logits)
    # Every slot of every step ran in C++ on the int8 copy (prefill chunks and decode steps alike), with
    # float32 activations: the float32 base keeps its own.
    assert plans and all(step.all_native() and not step.int8_activations for step in plans)
    assert all(plan.group.int8 is not None for s in plans for plan in s.plans.values())
    # The rounding is real: the first request's logits differ from PEFT's on the float adapter.
    request, prompt, adapter = items[0]
    unrounded = peft_logits(tiny_llama_dir, tiny_lora_adapters[adapter], prompt)[-1]
    assert not torch.allclose(rows[request][0], unrounded, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
def test_int8_adapters_on_the_int8_base_run_in_the_fused_decode_stack(tiny_llama_dir, tiny_lora_adapters):
    engine = make_engine(tiny_llama_dir, quantization="int8")
    for name in NAMES:
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    fused, calls = engine.executor.runner.fused_decode, []
    forward = fused.forward
    fused.forward = lambda *args: calls.append(args[-1]) or forward(*args)
    items = [(f"s{i}", p, [*NAMES, None][i % 5]) for i, p in enumerate(prompts(4, 6, 5, 20))]
    outputs = run(engine, items, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    assert all(len(o.outputs[0].token_ids) == 6 for o in outputs.values())
    assert any(lora is not None for lora in calls), "no decode step with adapters ran in the stack"
    # The int8 base quantizes its activations, so the adapters' kernels may too (VNNI CPUs take it up).
    assert all(lora.int8_activations for lora in calls if lora is not None)


def test_int8_adapters_need_the_cpu_and_float32():
    with pytest.raises(ValueError, match="lora_dtype must be one of"):
        LoRAConfig(lora_dtype="int4")
    with pytest.raises(ValueError, match="lora_dtype='int8' runs on the CPU with dtype float32"):
        EngineConfig(dtype="bfloat16", lora=LoRAConfig(enable=True, lora_dtype="int8"))


@pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
def test_int8_adapters_on_the_int8_base_follow_peft_on_the_float_base(
    tiny_llama_dir, tiny_lora_adapters, rounded_adapters, peft_logits
):
    # The int8 base rounds each token's activations, so the bar is agreement with PEFT's argmax (as for
    # float32 adapters on that base, tests/engine/test_quantized.py), against the adapter rounded alike.
    engine = make_engine(tiny_llama_dir, quantization="int8")
    engine.load_adapter("all8", str(tiny_lora_adapters["all8"]))
    prompt = list(range(1000, 1024))
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    engine.add_request(prompt, params, prompt_token_ids=prompt, adapter="all8")
    tokens = []
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            tokens = output.outputs[0].token_ids
    assert len(tokens) == 12
    reference = peft_logits(tiny_llama_dir, rounded_adapters["all8"], prompt + tokens[:-1])[len(prompt) - 1 :]
    agreement = (reference.argmax(-1) == torch.tensor(tokens)).float().mean()
    assert agreement >= 0.75, f"int8 base + int8 adapters chose PEFT's argmax at {agreement:.0%} of positions"
