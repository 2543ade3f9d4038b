"""Tensor parallelism on the CPU (worker processes joined by gloo): TP=2 gives the tokens TP=1
gives, and its logits agree with HF transformers and PEFT, through chunked prefill, prefix caching,
preemption, LoRA adapters mixed in the batch (more adapters than slots) and schema-constrained
requests. A killed worker fails the requests in flight and the engine with a clear error; nothing
hangs."""

import asyncio
import json
import os
import signal

import jsonschema
import pytest
from lora_support import assert_peft_parity, prompts, record_logits, run

from loomlm.async_llm import AsyncLLM
from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, ParallelConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.executor import ExecutorError
from loomlm.engine.sampling_params import SamplingParams

ADAPTERS = ("all8", "rs4", "re16")
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"enum": [1, 2, 3]},
        "tag": {"type": "string", "maxLength": 6},
    },
    "required": ["ok", "n", "tag"],
    "additionalProperties": False,
}


def make_engine(model_dir, tp: int, *, lora: bool = True, num_blocks: int = 16) -> LLMEngine:
    """A step budget of 32 tokens chunks every longer prompt; 16 blocks of 8 tokens are too few for
    the whole mixed batch at once, so some requests are preempted and recomputed."""
    return LLMEngine(
        EngineConfig(
            model=str(model_dir),
            scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=32, max_model_len=256),
            cache=CacheConfig(block_size=8, num_blocks=num_blocks, enable_prefix_caching=True),
            # Two slots for three adapters: slots are rewritten on every worker as the batch runs.
            lora=LoRAConfig(enable=lora, max_loras=2, max_lora_rank=16),
            parallel=ParallelConfig(tensor_parallel_size=tp, startup_timeout_s=300, step_timeout_s=120),
        )
    )


@pytest.fixture(scope="module")
def engines(tiny_llama_dir, tiny_lora_adapters):
    built = {tp: make_engine(tiny_llama_dir, tp) for tp in (1, 2)}
    for engine in built.values():
        for name in ADAPTERS:
            engine.load_adapter(name, str(tiny_lora_adapters[name]))
    yield built
    for engine in built.values():
        engine.close()


def mixed_items():
    """Prompts of 5-60 tokens (chunked past 32), the adapters and the base model interleaved, and
    pairs that share a 24-token prefix (3 full blocks for the prefix cache) under the same adapter."""
    items = [(f"r{i}", p, [*ADAPTERS, None][i % 4]) for i, p in enumerate(prompts(7, 8, 5, 60))]
    shared = prompts(8, 1, 24, 24)[0]
    for i, tail in enumerate(prompts(9, 4, 3, 10)):
        items.append((f"s{i}", shared + tail, [None, "all8"][i % 2]))
    return items


def test_tp2_matches_tp1_and_peft_on_a_mixed_lora_batch(
    engines, tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch
):
    items = mixed_items()
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    rows = record_logits(engines[2], monkeypatch)
    tp2 = run(engines[2], items, params)
    tp1 = run(engines[1], items, params)
    for request_id, _, adapter in items:
        assert tp2[request_id].outputs[0].token_ids == tp1[request_id].outputs[0].token_ids, (
            request_id,
            adapter,
        )
    # The sampled logits of every row against PEFT (the plain HF model for the base rows).
    assert_peft_parity(tp2, rows, items, tiny_llama_dir, tiny_lora_adapters, peft_logits)
    stats = engines[2].stats()
    assert stats["num_preemptions"] > 0
    assert stats["prefix_cache_hits"] > 0


def test_tp2_schema_constrained_requests_match_tp1_and_validate(engines):
    params = [
        SamplingParams(temperature=0, max_tokens=48, response_format=SCHEMA),
        SamplingParams(temperature=1.0, seed=3, max_tokens=48, response_format=SCHEMA),
        SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),  # unconstrained beside them
    ]
    texts = {}
    for tp, engine in engines.items():
        for i, sampling in enumerate(params):
            engine.add_request(f"Record {i}:", sampling, request_id=f"j{i}")
        outputs = {}
        while engine.has_unfinished_requests():
            for output in engine.step(only_finished=True):
                outputs[output.request_id] = output.outputs[0].text
        texts[tp] = outputs
    assert texts[2] == texts[1]
    for i in range(2):
        jsonschema.validate(json.loads(texts[2][f"j{i}"]), SCHEMA)


def test_tensor_parallel_size_that_does_not_split_the_model_is_refused(tiny_llama_dir):
    with pytest.raises(ValueError, match="num_attention_heads=4"):
        make_engine(tiny_llama_dir, 3)


def test_a_killed_worker_fails_the_requests_in_flight_and_the_engine(tiny_llama_dir):
    engine = make_engine(tiny_llama_dir, 2, lora=False, num_blocks=200)
    victim = engine.executor.worker_pids[1]
    assert engine.executor.is_alive

    async def scenario():
        llm = AsyncLLM.from_engine(engine)
        try:
            params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
            streams = [await llm.submit(f"request {i}", params) for i in range(4)]

            async def drain(stream):
                async for _ in stream:
                    pass

            tasks = [asyncio.create_task(drain(stream)) for stream in streams]
            await asyncio.sleep(0.5)  # decoding is under way
            assert llm.is_running
            os.kill(victim, signal.SIGKILL)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(result, ExecutorError) for result in results), results
            assert "rank 1" in str(results[0]) and "exited with code -9" in str(results[0])
            assert llm.errored is not None and not llm.is_running
        finally:
            await llm.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    assert not engine.executor.is_alive
    with pytest.raises(ExecutorError, match="have failed"):  # the engine refuses further steps
        engine.executor.execute(None)
    engine.close()
