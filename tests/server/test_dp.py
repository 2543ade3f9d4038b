"""Data parallel serving: two engine replicas behind one server (real uvicorn, the official client).

A mixed workload (plain, adapters, streaming, chat and completions) sent concurrently gets exactly
the single-replica server's greedy answers; the requests for one adapter all run on one replica
(seen in each replica's own stats); admin loads and unloads reach both replicas and a bad load
reports one error; /metrics parses as one exposition with both ``engine`` labels; SIGTERM drains
both replicas and the process exits 0."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import (
    ADMIN_KEY,
    API_KEY,
    ENGINE_OPTIONS,
    LORA_OPTIONS,
    ServerThread,
    assert_drained_after_sigterm,
    run,
    start_serve_model,
    wait_until_serving,
)

HERE = Path(__file__).parent
SYSTEM = "You answer questions about the shared document below in one short sentence. " * 4
# (kind, model, stream, text): chat or completion, the base model or an adapter, streamed or not.
WORKLOAD = [
    ("chat", "tiny", False, "Hello there."),
    ("chat", "ad1", False, "Name a color."),
    ("chat", "ad2", True, "Count to three."),
    ("completion", "tiny", True, "The capital of France is"),
    ("completion", "ad1", False, "Once upon a time"),
    ("chat", "ad1", True, "Hello there."),
    ("chat", "ad2", False, "Name a color."),
    ("completion", "ad2", True, "Once upon a time"),
    ("system", "tiny", False, "What is it about?"),
    ("system", "tiny", True, "Who wrote it?"),
    ("system", "ad1", False, "What is it about?"),
    ("chat", "tiny", True, "Tell me a story."),
]


@pytest.fixture(scope="module")
def dp_adapter_root(tmp_path_factory, tiny_lora_adapters) -> Path:
    """The DP server's adapter_dir: all8, rs4 and all8b, and ``broken`` (not a LoRA adapter)."""
    root = tmp_path_factory.mktemp("dp_adapters")
    for name in ("all8", "rs4", "all8b"):
        shutil.copytree(tiny_lora_adapters[name], root / name)
    (root / "broken").mkdir()
    (root / "broken" / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}')
    return root


@pytest.fixture(scope="module")
def dp(tiny_llama_dir, dp_adapter_root):
    """A server over two replicas with the session server's adapters (ad1 = all8, ad2 = rs4)."""
    from loomlm import AsyncLLM
    from loomlm.server import ServerConfig, build_app

    llms = [AsyncLLM(str(tiny_llama_dir), **ENGINE_OPTIONS, **LORA_OPTIONS) for _ in range(2)]
    config = ServerConfig(
        served_model_name="tiny",
        api_key=API_KEY,
        admin_key=ADMIN_KEY,
        adapters={"ad1": str(dp_adapter_root / "all8"), "ad2": str(dp_adapter_root / "rs4")},
        adapter_dir=str(dp_adapter_root),
        enable_adapter_loading=True,
        data_parallel_size=2,
    )
    thread = ServerThread(build_app(llms, config)).start()
    yield thread, llms
    thread.stop()
    for llm in llms:
        run(llm.shutdown())


async def ask(client: openai.AsyncOpenAI, kind: str, model: str, stream: bool, text: str) -> str:
    greedy = {"max_tokens": 8, "temperature": 0}
    if kind == "completion":
        if not stream:
            return (await client.completions.create(model=model, prompt=text, **greedy)).choices[0].text
        chunks = await client.completions.create(model=model, prompt=text, stream=True, **greedy)
        return "".join([c.choices[0].text async for c in chunks if c.choices])
    messages = [{"role": "user", "content": text}]
    if kind == "system":
        messages.insert(0, {"role": "system", "content": SYSTEM})
    if not stream:
        answer = await client.chat.completions.create(model=model, messages=messages, **greedy)
        return answer.choices[0].message.content
    chunks = await client.chat.completions.create(model=model, messages=messages, stream=True, **greedy)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


def answers(thread: ServerThread) -> list[str]:
    async def main() -> list[str]:
        async with thread.async_client() as client:
            return list(await asyncio.gather(*(ask(client, *request) for request in WORKLOAD)))

    return asyncio.run(asyncio.wait_for(main(), 60))


def finished_per_replica(llms) -> list[int]:
    return [sum(run(llm.stats())["finished"].values()) for llm in llms]


def test_a_mixed_workload_gets_the_single_replica_answers(dp, server):
    thread, llms = dp
    expected = answers(server)  # the session server: one replica, the same model and adapters
    before = finished_per_replica(llms)
    assert answers(thread) == expected
    after = finished_per_replica(llms)
    assert all(a > b for a, b in zip(after, before, strict=True)), "both replicas took requests"
    router = thread.app.state.loomlm.replicas.router
    assert router.in_flight == (0, 0)  # every request gave its slot back


def test_requests_for_one_adapter_run_on_one_replica(dp):
    thread, llms = dp
    with thread.http(ADMIN_KEY) as admin:
        loaded = admin.post("/v1/load_lora_adapter", json={"lora_name": "fresh", "lora_path": "all8b"})
        assert loaded.status_code == 200, loaded.text
    assert all("fresh" in {ref.name for ref in run(llm.list_adapters())} for llm in llms)
    client = thread.client()
    fresh, base = set(), set()
    for i in range(4):
        for model, seen in (("fresh", fresh), ("tiny", base)):
            before = finished_per_replica(llms)
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"Say {i}."}], max_tokens=3
            )
            after = finished_per_replica(llms)
            seen.add(next(r for r in range(2) if after[r] > before[r]))
    assert len(fresh) == 1, "every request for the adapter ran on the replica that holds it"
    assert base - fresh, "base requests, with nothing to keep them together, used the other replica"
    router = thread.app.state.loomlm.replicas.router
    (replica,) = fresh
    assert "fresh" in router.resident_adapters(replica)
    assert "fresh" not in router.resident_adapters(1 - replica)


def test_admin_loads_and_unloads_reach_every_replica(dp):
    thread, llms = dp
    with thread.http(ADMIN_KEY) as admin:
        loaded = admin.post("/v1/load_lora_adapter", json={"lora_name": "both", "lora_path": "rs4"})
        assert loaded.status_code == 200, loaded.text
        for llm in llms:
            assert "both" in {ref.name for ref in run(llm.list_adapters())}
        assert "both" in {m["id"] for m in thread.http().get("/v1/models").json()["data"]}
        assert admin.post("/v1/unload_lora_adapter", json={"lora_name": "both"}).status_code == 200
        for llm in llms:
            assert "both" not in {ref.name for ref in run(llm.list_adapters())}
        gone = admin.post("/v1/unload_lora_adapter", json={"lora_name": "both"})
        assert gone.status_code == 404
        broken = admin.post("/v1/load_lora_adapter", json={"lora_name": "broken", "lora_path": "broken"})
    assert broken.status_code == 400, broken.text
    message = broken.json()["error"]["message"]
    assert message and message.count(message[:20]) == 1  # one replica's error, reported once
    for llm in llms:
        assert "broken" not in {ref.name for ref in run(llm.list_adapters())}


def test_build_app_needs_one_asyncllm_per_replica(dp):
    from loomlm.server import ServerConfig, build_app

    _, llms = dp
    with pytest.raises(ValueError, match="data_parallel_size=2"):
        build_app(llms[:1], ServerConfig(data_parallel_size=2))
    with pytest.raises(ValueError, match="data_parallel_size=1"):
        build_app(llms, ServerConfig())


def test_metrics_merge_both_replicas_into_one_exposition(dp):
    thread, _ = dp
    thread.client().completions.create(model="tiny", prompt="Warm up.", max_tokens=2)
    text = thread.http(None).get("/metrics").text
    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), "a family appears once, with every replica's samples"
    by_name = {family.name: family for family in families}
    engines = {s.labels["engine"] for s in by_name["loomlm:prompt_tokens"].samples}
    assert engines == {"0", "1"}
    assert {s.labels["engine"] for s in by_name["loomlm:num_requests_running"].samples} == {"0", "1"}
    routed = by_name["loomlm:router_requests_routed"].samples
    assert sum(s.value for s in routed if s.name.endswith("_total")) > 0
    assert "loomlm:http_requests" in by_name  # the server's own counts follow


def test_a_client_that_leaves_gives_its_replica_slot_back(dp):
    thread, _ = dp
    router = thread.app.state.loomlm.replicas.router
    body = {"model": "tiny", "prompt": "Go on.", "max_tokens": 400, "stream": True, "ignore_eos": True}
    with thread.http() as http, http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator would close the connection
        next(lines)
        assert sum(router.in_flight) == 1
    deadline = time.monotonic() + 10
    while sum(router.in_flight):
        assert time.monotonic() < deadline, router.in_flight
        time.sleep(0.02)


async def _one_stream(client: openai.AsyncOpenAI, i: int) -> str:
    """ "completed", or "failed: <why>" for a clean error (an error status or an error event)."""
    try:
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"Go on {i}."}], max_tokens=400,
            stream=True, extra_body={"ignore_eos": True},
        )  # fmt: skip
        reasons = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    except openai.APIConnectionError as error:  # a dropped connection is not a clean error
        return f"connection: {error!r}"
    except (openai.APIStatusError, openai.APIError) as error:
        return f"failed: {error!r}"
    return "completed" if reasons[-1] == "length" else f"unfinished: {reasons}"


def _waiting_per_engine(text: str) -> dict[str, float]:
    for family in text_string_to_metric_families(text):
        if family.name == "loomlm:num_requests_waiting":
            return {s.labels["engine"]: s.value for s in family.samples}
    return {}


def test_sigterm_drains_both_replicas_and_exits_0(tiny_llama_dir, tmp_path):
    log_path = tmp_path / "server.log"
    process, url = start_serve_model(tiny_llama_dir, log_path, "1.0", "2")
    try:
        wait_until_serving(url, process, timeout=120)

        async def main():
            key = "sigterm-key"
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
            tasks = [asyncio.create_task(_one_stream(client, i)) for i in range(10)]
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
                for _ in range(1000):  # until both replicas run two and queue more
                    waiting = _waiting_per_engine((await http.get("/metrics")).text)
                    if len(waiting) == 2 and min(waiting.values()) >= 2:
                        break
                    await asyncio.sleep(0.01)
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                chat = {"model": "tiny", "messages": [{"role": "user", "content": "Late."}]}
                late = await http.post("/v1/chat/completions", json=chat)
                health = await http.get("/health")
            outcomes = await asyncio.gather(*tasks)
            await client.close()
            return waiting, late, health, outcomes

        waiting, late, health, outcomes = asyncio.run(asyncio.wait_for(main(), 60))
        assert min(waiting.values()) >= 2, waiting
        assert_drained_after_sigterm(late, health, outcomes, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert "Traceback" not in log and "2 data-parallel replicas" in log, log
