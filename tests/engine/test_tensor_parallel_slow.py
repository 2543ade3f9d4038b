"""Tensor parallelism on real shapes (slow): SmolLM2-135M split three ways (9 query heads, 3 KV
heads: one KV head per rank) gives TP=1's tokens and HF's greedy tokens, with a LoRA adapter
(PEFT's argmax) and a schema-constrained request in the batch; and a tiny model split four ways
over its 2 KV heads (each KV head replicated on two ranks) matches HF."""

import json

import jsonschema
import pytest

from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, ParallelConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
TEXTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Here is a short poem about the sea:\n",
    "Question: what is 12 times 12?\nAnswer:",
]


def make_engine(model_dir, tp: int, lora: bool) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=32, max_model_len=512),
            cache=CacheConfig(block_size=16, num_blocks=64),
            lora=LoRAConfig(enable=lora, max_loras=2, max_lora_rank=8),
            parallel=ParallelConfig(tensor_parallel_size=tp, startup_timeout_s=600, step_timeout_s=300),
        )
    )


def run(engine, requests) -> dict[str, tuple[list[int], str]]:
    for request_id, token_ids, params, adapter in requests:
        engine.add_request(
            token_ids, params, request_id=request_id, prompt_token_ids=token_ids, adapter=adapter
        )
    outputs = {}
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            outputs[output.request_id] = (output.outputs[0].token_ids, output.outputs[0].text)
    return outputs


def test_smollm2_tp3_matches_tp1_hf_and_peft(
    smollm2_dir, tokenizer, hf_greedy, peft_logits, peft_adapter_factory, tmp_path
):
    adapter_dir = peft_adapter_factory(
        smollm2_dir, tmp_path / "adapter", seed=1, r=8, lora_alpha=8, target_modules=MODULES
    )
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    requests = [(f"base{i}", p, greedy, None) for i, p in enumerate(prompts)]
    requests += [(f"lora{i}", p, greedy, "a") for i, p in enumerate(prompts[:2])]
    json_prompt = tokenizer("Give the city and population of Paris as JSON: ").input_ids
    json_params = SamplingParams(temperature=0, max_tokens=40, response_format=SCHEMA)
    requests.append(("json", json_prompt, json_params, None))

    results = {}
    for tp in (1, 3):
        engine = make_engine(smollm2_dir, tp, lora=True)
        try:
            engine.load_adapter("a", str(adapter_dir))
            results[tp] = run(engine, requests)
        finally:
            engine.close()

    assert results[3] == results[1]
    for i, prompt in enumerate(prompts):
        assert results[3][f"base{i}"][0] == hf_greedy(smollm2_dir, prompt, 12), TEXTS[i]
    for i, prompt in enumerate(prompts[:2]):
        tokens = results[3][f"lora{i}"][0]
        expected = peft_logits(smollm2_dir, adapter_dir, prompt + tokens[:-1])[len(prompt) - 1 :]
        assert tokens == expected.argmax(-1).tolist(), TEXTS[i]
    jsonschema.validate(json.loads(results[3]["json"][1]), SCHEMA)


def test_tiny_llama_tp4_replicates_kv_heads_and_matches_hf(tiny_llama_dir, tokenizer, hf_greedy):
    greedy = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    engine = make_engine(tiny_llama_dir, 4, lora=False)
    try:
        assert engine.executor.world_size == 4
        outputs = run(engine, [(f"p{i}", p, greedy, None) for i, p in enumerate(prompts)])
    finally:
        engine.close()
    for i, prompt in enumerate(prompts):
        assert outputs[f"p{i}"][0] == hf_greedy(tiny_llama_dir, prompt, 16), TEXTS[i]
