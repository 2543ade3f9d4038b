"""AsyncLLM's lifecycle on a tiny random Llama: consumers that leave (cancelled, closed, broken
out, their event loop gone) abort their request and free its KV blocks; errors reach only their
caller; a crash in the engine loop fails every caller and never hangs; draining, shutdown, the
waiting-queue bound, and an engine thread that sleeps when idle."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from async_support import ASYNC_OPTIONS, run

from loomlm import (
    AdapterError,
    EngineStoppedError,
    InvalidPromptError,
    InvalidSchemaError,
    QueueFullError,
    RequestError,
    SamplingParams,
)

OPTIONS = ASYNC_OPTIONS
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
LONG = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)  # outlives every test's patience
PROMPTS = [f"Prompt number {i} about {topic}" for i, topic in enumerate(["rain", "cats", "maps", "tea"] * 4)]


async def collect(stream) -> list:
    return [item async for item in stream]


async def wait_for_outputs(items: list, count: int) -> None:
    while len(items) < count:
        await asyncio.sleep(0.005)


# -- leaving early frees the request ---------------------------------------------------------------
def test_cancelling_a_consumer_mid_stream_frees_its_kv_blocks(llm):
    async def main():
        idle = (await llm.stats())["kv_cache_usage"]
        seen: list = []

        async def consume():
            async for item in llm.generate_stream(PROMPTS[3], LONG):
                seen.append(item)

        task = asyncio.create_task(consume())
        await wait_for_outputs(seen, 3)
        assert (await llm.stats())["kv_cache_usage"] > idle
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after = await llm.stats()  # queued behind the abort on the engine thread
        assert after["kv_cache_usage"] == idle and after["num_running"] == after["num_waiting"] == 0
        assert not seen[-1].finished

    run(main())


def test_closing_or_breaking_out_of_a_stream_aborts_it(llm):
    async def main():
        idle = (await llm.stats())["kv_cache_usage"]
        async with contextlib.aclosing(llm.generate_stream(PROMPTS[4], LONG)) as stream:
            async for _ in stream:
                break
        assert (await llm.stats())["kv_cache_usage"] == idle
        async for _ in llm.generate_stream(PROMPTS[5], LONG):
            break  # no aclose: the generator is closed when it is collected
        deadline = time.monotonic() + 10
        while (await llm.stats())["num_running"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (await llm.stats())["kv_cache_usage"] == idle

    run(main())


def test_a_request_whose_event_loop_closed_is_aborted(llm):
    async def leave() -> str:
        stream = await llm.submit(PROMPTS[7], LONG)  # never read; its loop closes below
        await anext(stream)
        return stream.request_id

    run(leave())

    async def until_idle():
        while (await llm.stats())["num_running"]:
            await asyncio.sleep(0.01)
        return await llm.stats()

    assert run(until_idle(), timeout=10)["kv_cache_usage"] == 0.0


def test_abort_finishes_the_stream_with_reason_abort(llm):
    async def main():
        stream = await llm.submit(PROMPTS[6], LONG, request_id="to-abort")
        first = await anext(stream)
        assert await llm.abort("to-abort") and not await llm.abort("to-abort")
        rest = await collect(stream)
        assert (await stream.result()).outputs[0].finish_reason == "abort"  # the last one, kept
        return first, rest

    first, rest = run(main())
    assert not first.finished and rest[-1].finished
    assert rest[-1].deltas[0].finish_reason == "abort"


# -- errors belong to their caller ------------------------------------------------------------------
def test_a_bad_request_raises_only_in_its_caller(llm):
    bad_schema = SamplingParams(max_tokens=4, response_format={"type": "no such type"})

    async def main():
        good = [collect(llm.generate_stream(p, GREEDY)) for p in PROMPTS[:3]]
        bad = [
            collect(llm.generate_stream("hi", bad_schema)),
            collect(llm.generate_stream("", GREEDY)),
            collect(llm.generate_stream("hi", GREEDY, adapter="missing")),
        ]
        return await asyncio.gather(*good, *bad, return_exceptions=True)

    *good, schema, empty, adapter = run(main())
    assert all(items[-1].finished and len(items[-1].output.outputs[0].token_ids) == 12 for items in good)
    assert isinstance(schema, InvalidSchemaError) and isinstance(empty, InvalidPromptError)
    assert isinstance(adapter, AdapterError)
    outputs = run(llm.generate(["fine", "hi"], [GREEDY, bad_schema]))  # a batch: as LLM.generate
    assert outputs[0].error is None and "invalid JSON Schema" in outputs[1].error


def test_an_engine_loop_crash_fails_every_caller_and_nothing_hangs(make_llm, monkeypatch):
    llm = make_llm()
    real_step, steps = llm.engine.step, []

    def failing_step(only_finished: bool = False):
        steps.append(threading.get_ident())
        if len(steps) > 3:
            raise RuntimeError("a bug in a step")
        return real_step(only_finished=only_finished)

    monkeypatch.setattr(llm.engine, "step", failing_step)

    async def main():
        calls = [collect(llm.generate_stream(p, LONG)) for p in PROMPTS[:4]]
        return await asyncio.gather(*calls, llm.generate(PROMPTS[4:6], LONG), return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, RuntimeError) and str(r) == "a bug in a step" for r in results)
    assert set(steps) != {threading.get_ident()} and len(set(steps)) == 1  # one engine thread
    assert not llm.is_running and str(llm.errored) == "a bug in a step"
    with pytest.raises(EngineStoppedError, match="failed") as refused:
        run(llm.submit("hi", GREEDY))
    assert refused.value.__cause__ is llm.errored
    run(llm.shutdown(), timeout=10)


# -- draining, shutdown, the queue bound ------------------------------------------------------------
def test_draining_refuses_new_requests_and_lets_those_in_flight_finish(make_llm):
    llm = make_llm()

    async def main():
        streams = [await llm.submit(p, GREEDY) for p in PROMPTS[:3]]
        llm.stop_admitting()
        assert llm.is_draining and not llm.is_running
        with pytest.raises(EngineStoppedError, match="draining"):
            await llm.submit("late", GREEDY)
        finals = await asyncio.gather(*(stream.result() for stream in streams))
        await llm.shutdown(drain_timeout=30)
        return finals

    assert [f.outputs[0].finish_reason for f in run(main())] == ["length"] * 3


def test_a_full_queue_refuses_and_shutdown_aborts_what_is_in_flight(make_llm):
    llm = make_llm(max_num_seqs=1, max_waiting=2)

    async def main():
        running = await llm.submit(PROMPTS[0], LONG)
        await anext(running)  # admitted: the one running slot is taken
        waiting = [await llm.submit(p, LONG) for p in PROMPTS[1:3]]
        with pytest.raises(QueueFullError, match="max_waiting=2") as full:
            await llm.submit(PROMPTS[3], LONG)
        assert isinstance(full.value, RequestError)
        await llm.shutdown()
        finals = [(await collect(stream))[-1] for stream in [running, *waiting]]
        with pytest.raises(EngineStoppedError):
            await llm.submit("after", GREEDY)
        return finals

    assert [f.deltas[0].finish_reason for f in run(main())] == ["abort"] * 3
    assert run(llm.stats())["kv_cache_usage"] == 0.0


def test_the_engine_thread_sleeps_when_idle(llm, monkeypatch):
    run(llm.generate("warm up", GREEDY))
    time.sleep(0.3)  # the thread finishes its last loop turn and waits
    engine, checks = llm.engine, []
    has_work = engine.has_unfinished_requests

    def counted() -> bool:
        checks.append(1)
        return has_work()

    monkeypatch.setattr(engine, "has_unfinished_requests", counted)
    time.sleep(0.5)
    # Asleep on its condition, the thread looks at nothing; a polling loop would check for work
    # thousands of times in half a second.
    assert not checks
    run(llm.generate("wakes it", GREEDY))
    assert checks  # the counter does see the thread's checks once there is work
