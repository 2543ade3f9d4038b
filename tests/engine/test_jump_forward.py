"""Jump-forward decoding: tokens the grammar forces (keys, punctuation) are appended without a model
step each; the outputs still validate and the same batch takes fewer steps."""

from __future__ import annotations

from structured_support import SHORT, SMALL_INT, validates

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.compiler import CompilerConfig

PERSON = {
    "type": "object",
    "properties": {"first_name": SHORT, "family_name": SHORT, "age": SMALL_INT},
    "required": ["first_name", "family_name", "age"],
    "additionalProperties": False,
}


def jump_forward_engine(tiny_llama_dir, jump_forward: bool) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            scheduler=SchedulerConfig(max_model_len=512, max_num_seqs=16),
            cache=CacheConfig(block_size=16, num_blocks=256),
            grammar=CompilerConfig(cache_dir=None),
            grammar_backend="llguidance",
            jump_forward=jump_forward,
        )
    )


def count_steps(engine: LLMEngine, requests) -> tuple[dict, int]:
    for request_id, (prompt, params) in requests.items():
        engine.add_request(prompt, params, request_id=request_id)
    finished, steps = {}, 0
    while engine.has_unfinished_requests():
        outputs = engine.step()
        steps += 1
        finished.update({o.request_id: o for o in outputs if o.finished})
    return finished, steps


def test_jump_forward_appends_forced_tokens_without_a_model_step_each(tiny_llama_dir):
    requests = {
        f"p-{seed}": (
            "Person:",
            SamplingParams(temperature=1, seed=seed, max_tokens=80, response_format=PERSON),
        )
        for seed in range(4)
    }
    results = {}
    for jump in (False, True):
        engine = jump_forward_engine(tiny_llama_dir, jump)
        try:
            results[jump] = count_steps(engine, requests)
        finally:
            engine.close()
    (plain, plain_steps), (forced, forced_steps) = results[False], results[True]
    for request_id in requests:
        for outputs in (plain, forced):
            completion = outputs[request_id].outputs[0]
            assert completion.finish_reason == "stop" and validates(PERSON, completion.parsed)
    # The keys and punctuation ('{"first_name":"', ...) are forced: fewer steps for the same batch.
    assert forced_steps < plain_steps
