"""LLMEngine step by step: abort mid-flight, outputs while running, stats."""

import threading

import pytest
from engine_support import run_to_completion

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.processor import PromptTooLongError
from loomlm.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            scheduler=SchedulerConfig(max_model_len=128, max_num_batched_tokens=64),
            cache=CacheConfig(block_size=8, num_blocks=64),
        )
    )


def test_abort_mid_flight_leaves_the_others_running(engine):
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    for name in ("a", "b", "c"):
        engine.add_request(f"prompt {name}", params, request_id=name)
    engine.step()
    engine.step()
    (aborted,) = engine.abort_request(["b"])
    assert aborted.finished and aborted.outputs[0].finish_reason == "abort"
    finished = run_to_completion(engine)
    assert set(finished) == {"a", "c"}
    assert all(len(o.outputs[0].token_ids) == 20 for o in finished.values())
    assert engine.kv_cache.pool.usage == 0.0


def test_streaming_outputs_grow_one_token_per_step(engine):
    engine.add_request(
        "stream me", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), request_id="s"
    )
    lengths = []
    while engine.has_unfinished_requests():
        for output in engine.step():
            lengths.append(len(output.outputs[0].token_ids))
    assert lengths == [1, 2, 3, 4]


def test_too_long_prompt_is_refused_at_intake(engine):
    with pytest.raises(PromptTooLongError, match="max_model_len"):
        engine.add_request(list(range(1, 200)), SamplingParams())
    assert not engine.has_unfinished_requests()


def test_duplicate_request_id_is_refused(engine):
    engine.add_request("x", SamplingParams(max_tokens=1), request_id="dup")
    with pytest.raises(ValueError, match="already"):
        engine.add_request("y", SamplingParams(max_tokens=1), request_id="dup")
    run_to_completion(engine)


def test_a_step_with_only_compiling_requests_waits_for_a_compile_instead_of_spinning(engine):
    from concurrent.futures import Future

    from loomlm.grammar.specs import Regex

    request_id = engine.add_request("hi", SamplingParams(max_tokens=3, response_format=Regex("[ab]{3}")))
    request = engine.scheduler.requests[request_id]
    compiled, pending = request.grammar_future, Future()
    request.grammar_future = pending  # a compile that finishes 0.3 s from now
    timer = threading.Timer(0.3, lambda: pending.set_result(compiled.result()))
    timer.start()
    assert engine.step() == []  # nothing could run: the step blocked on the compile ...
    assert pending.done()  # ... until it finished, rather than returning at once
    outputs = run_to_completion(engine)
    assert outputs[request_id].outputs[0].text in {a + b + c for a in "ab" for b in "ab" for c in "ab"}
