"""The engine on a CUDA device, where its Triton kernels (paged attention, KV store, LoRA
shrink/expand, token bitmask) run natively inside whole steps: greedy tokens against HF
transformers on the same GPU, per-row logits against PEFT, bf16 against float32, and
schema-constrained output. CI has no GPU, so these skip there; `bench/gpu_check.sh` runs them
(and the Triton kernel tests, natively) on a lent GPU machine."""

from __future__ import annotations

import json

import pytest
import torch
from jsonschema import Draft202012Validator
from lora_support import GREEDY as LORA_GREEDY
from lora_support import assert_peft_parity, prompts, record_logits, run

from loomlm import LLM, SamplingParams
from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.grammar.specs import JsonSchema
from loomlm.kernels.triton_import import triton

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


@pytest.fixture(scope="module", autouse=True)
def triton_runs_natively():
    # On a GPU every kernel dispatcher picks Triton; a silent fall back to the torch references
    # would make these tests pass without testing the kernels.
    assert triton is not None, "triton must import on a CUDA machine"


@pytest.fixture(scope="module")
def hf_cuda():
    """``(model_dir, dtype) -> HF model on the GPU`` (cached), EOS never stops its generate."""
    from transformers import AutoModelForCausalLM

    models: dict[tuple[str, torch.dtype], torch.nn.Module] = {}

    def load(model_dir, dtype=torch.float32):
        key = (str(model_dir), dtype)
        if key not in models:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).cuda().eval()
            model.generation_config.eos_token_id = None
            models[key] = model
        return models[key]

    return load


def hf_greedy_tokens(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    input_ids = torch.tensor([prompt], device="cuda")
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
    )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("chunked", [True, False])
def test_float32_greedy_matches_hf_on_the_gpu(tiny_llama_dir, hf_cuda, chunked):
    llm = LLM(
        str(tiny_llama_dir),
        device="cuda",
        enable_chunked_prefill=chunked,
        max_num_batched_tokens=32 if chunked else 512,
        max_model_len=512,
        block_size=8,
    )
    batch = prompts(seed=1, count=10, low=3, high=70)
    outputs = llm.generate(batch, GREEDY)
    model = hf_cuda(tiny_llama_dir)
    for prompt, output in zip(batch, outputs, strict=True):
        assert output.error is None
        assert output.outputs[0].token_ids == hf_greedy_tokens(model, prompt, GREEDY.max_tokens)


def test_preemption_on_the_gpu_keeps_outputs_exact(tiny_llama_dir, hf_cuda):
    llm = LLM(str(tiny_llama_dir), device="cuda", block_size=4, num_kv_blocks=40, max_num_batched_tokens=64)
    batch = prompts(seed=2, count=10, low=3, high=70)
    outputs = llm.generate(batch, GREEDY)
    assert llm.engine.stats()["num_preemptions"] > 0
    model = hf_cuda(tiny_llama_dir)
    for prompt, output in zip(batch, outputs, strict=True):
        assert output.outputs[0].token_ids == hf_greedy_tokens(model, prompt, GREEDY.max_tokens)


def test_bfloat16_logits_are_as_close_to_float32_as_hfs_bfloat16(tiny_llama_dir, hf_cuda):
    """bf16 weights and KV cache: each prompt's last-position logits are as close to HF's float32
    ones (relative norm error) as HF's own bf16 model gets, within 2x. Not tokens: argmax near-ties
    may flip between any two bf16 implementations."""
    llm = LLM(str(tiny_llama_dir), device="cuda", dtype="bfloat16", block_size=8)
    batch = prompts(seed=3, count=6, low=8, high=60)
    rows: list[torch.Tensor] = []
    execute = llm.engine.executor.execute

    def recording(model_input):
        logits = execute(model_input)
        rows.extend(logits.float())
        return logits

    llm.engine.executor.execute = recording
    llm.generate(batch, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    assert len(rows) == len(batch)
    for prompt, got in zip(batch, rows, strict=True):
        input_ids = torch.tensor([prompt], device="cuda")
        with torch.no_grad():
            want = hf_cuda(tiny_llama_dir)(input_ids=input_ids).logits[0, -1].float()
            hf_bf16 = hf_cuda(tiny_llama_dir, torch.bfloat16)(input_ids=input_ids).logits[0, -1].float()
        error = float((got - want).norm() / want.norm())
        hf_error = float((hf_bf16 - want).norm() / want.norm())
        assert error <= 2 * hf_error + 1e-3, f"bf16 error {error:.4f} vs HF bf16's {hf_error:.4f}"


def test_mixed_adapter_batch_matches_peft_on_the_gpu(
    tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch
):
    engine = LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            device="cuda",
            scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=256, max_model_len=256),
            cache=CacheConfig(block_size=8, num_blocks=256),
            lora=LoRAConfig(enable=True, max_loras=4, max_lora_rank=16),
        )
    )
    names = ("all8", "rs4", "re16", None)
    for name in names[:-1]:
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    rows = record_logits(engine, monkeypatch)
    items = [(f"r{i}", p, names[i % 4]) for i, p in enumerate(prompts(0, 12, 5, 40))]
    outputs = run(engine, items, LORA_GREEDY)
    # PEFT's logits are float32 on the CPU; the GPU's float32 differs by summation order alone.
    cpu_rows = {key: [row.cpu() for row in value] for key, value in rows.items() if key.startswith("r")}
    assert_peft_parity(outputs, cpu_rows, items, tiny_llama_dir, tiny_lora_adapters, peft_logits)


def test_json_schema_output_validates_on_the_gpu(tiny_llama_dir):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    llm = LLM(str(tiny_llama_dir), device="cuda")
    params = SamplingParams(temperature=0.8, seed=7, max_tokens=64, response_format=JsonSchema(schema))
    outputs = llm.generate(prompts(seed=4, count=8, low=4, high=20), params)
    validator = Draft202012Validator(schema)
    finished = [o for o in outputs if o.outputs[0].finish_reason == "stop"]
    assert finished, "no constrained output finished within max_tokens"
    for output in finished:
        validator.validate(json.loads(output.outputs[0].text))
