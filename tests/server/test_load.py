"""Under load: 64 concurrent streaming clients (plain, JSON schema, tools, two adapters, completions)
all finish with well-formed chunks while /health keeps answering; clients that disconnect mid-stream
or before a non-streamed answer have their requests aborted, and the KV cache goes back to idle."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jsonschema
from server_helpers import API_KEY, metric

CHAT = [{"role": "user", "content": "Write something short."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "word": {"type": "string", "maxLength": 6},
        "n": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["word", "n"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"key": {"type": "string", "maxLength": 8}},
            "required": ["key"],
        },
    },
}
LONG = {"max_tokens": 400, "ignore_eos": True}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA, "strict": True}}


def engine_idle(http: httpx.Client) -> tuple[float, float, float]:
    text = http.get("/metrics").text
    return (
        metric(text, "loomlm:num_requests_running"),
        metric(text, "loomlm:num_requests_waiting"),
        metric(text, "loomlm:kv_cache_usage_perc"),
    )


def wait_until_idle(http: httpx.Client, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (state := engine_idle(http)) != (0.0, 0.0, 0.0):
        assert time.monotonic() < deadline, f"the engine did not go idle: running, waiting, kv = {state}"
        time.sleep(0.05)


def aborted(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("loomlm:request_success_total{") and 'finished_reason="abort"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no abort counter")


def kind_of(i: int) -> tuple[str, dict]:
    """Client i's request: a mix of plain chats, schema chats, tool chats, adapters, completions."""
    kinds = [
        ("plain", {}),
        ("schema", {"response_format": SCHEMA_FORMAT}),
        ("tools", {"tools": [TOOL], "tool_choice": "required" if i % 2 else "auto"}),
        ("ad1", {"model": "ad1"}),
        ("ad2", {"model": "ad2"}),
        ("completion", {}),
    ]
    return kinds[i % len(kinds)]


async def one_client(client, i: int) -> tuple[str, list]:
    kind, extra = kind_of(i)
    options = {"model": "tiny", "max_tokens": 8 + i % 9, "seed": i, "stream": True, **extra}
    options["stream_options"] = {"include_usage": True}
    if kind == "completion":
        stream = await client.completions.create(prompt=f"Item {i}:", **options)
    else:
        stream = await client.chat.completions.create(messages=CHAT, **options)
    return kind, [chunk async for chunk in stream]


def check_stream(kind: str, chunks: list) -> None:
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens <= 16
    assert len({c.id for c in chunks}) == 1 and all(c.choices for c in body)
    reasons = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason]
    assert len(reasons) == 1 and body[-1].choices[0].finish_reason == reasons[0]
    if kind == "completion":
        assert reasons[0] in ("stop", "length")
        return
    assert body[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in body)
    if kind == "schema" and reasons[0] == "stop":
        jsonschema.validate(json.loads(text), SCHEMA)
    elif kind == "tools":
        assert reasons[0] in ("stop", "length", "tool_calls")
        arguments: dict[int, str] = {}
        for chunk in body:
            for call in chunk.choices[0].delta.tool_calls or []:
                arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
        if reasons[0] == "tool_calls":
            assert arguments and all(isinstance(json.loads(a), dict) for a in arguments.values())
    else:
        assert reasons[0] in ("stop", "length")


def test_64_concurrent_streams_complete_while_health_answers(server):
    health_times: list[float] = []

    async def main():
        client = server.async_client()
        tasks = [asyncio.create_task(one_client(client, i)) for i in range(64)]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            while not all(task.done() for task in tasks):
                started = time.monotonic()
                assert (await http.get("/health")).status_code == 200
                health_times.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
        results = await asyncio.gather(*tasks)
        await client.close()
        return results

    results = asyncio.run(asyncio.wait_for(main(), 120))
    assert len(results) == 64
    for kind, chunks in results:
        check_stream(kind, chunks)
    assert health_times and max(health_times) < 5.0
    with server.http() as http:
        wait_until_idle(http)


def test_clients_that_disconnect_have_their_requests_aborted(server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "tiny", "messages": CHAT, "stream": True, **LONG}
    with server.http() as http:
        wait_until_idle(http)
        before = aborted(http)

    async def leave_mid_stream(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            async for line in response.aiter_lines():
                events += line.startswith("data: ")
                if events == 3:
                    break  # closing the response drops the connection

    async def leave_before_the_answer(http: httpx.AsyncClient) -> None:
        try:
            # Four completions of 400 tokens: far longer than the client waits.
            await http.post("/v1/chat/completions", json={**body, "stream": False, "n": 4}, timeout=0.2)
        except httpx.TimeoutException:
            return
        raise AssertionError("the long request answered within 0.2 s: nothing was left early")

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            await asyncio.gather(*(leave_mid_stream(http) for _ in range(6)), leave_before_the_answer(http))

    asyncio.run(asyncio.wait_for(main(), 60))
    with server.http() as http:
        wait_until_idle(http)  # running 0, waiting 0, KV usage back to 0: every block freed
        assert aborted(http) - before == 6 + 4  # counted per completion
