"""The server over a tensor-parallel engine (two gloo worker processes): plain chat, a LoRA adapter,
a strict json_schema response and a required tool call, streamed and not, give the answers of the
single-process server (the session ``server``), through the official client."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from server_helpers import API_KEY, ENGINE_OPTIONS, LORA_OPTIONS, ServerThread, run

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def tp_server(tiny_llama_dir, adapter_dirs):
    from loomlm import AsyncLLM
    from loomlm.server import ServerConfig, build_app

    llm = AsyncLLM(str(tiny_llama_dir), tensor_parallel_size=2, **ENGINE_OPTIONS, **LORA_OPTIONS)
    config = ServerConfig(
        served_model_name="tiny", api_key=API_KEY, adapters={"ad1": str(adapter_dirs["all8"])}
    )
    thread = ServerThread(build_app(llm, config)).start()
    yield thread
    thread.stop()
    run(llm.shutdown())


async def ask(client, kind: str, model: str, stream: bool) -> str:
    greedy = {"max_tokens": 64, "temperature": 0}
    messages = [{"role": "user", "content": "Tell me about Ada, 36, in London."}]
    extra = {}
    if kind == "json":
        schema = {"name": "person", "schema": SCHEMA, "strict": True}
        extra = {"response_format": {"type": "json_schema", "json_schema": schema}}
    elif kind == "tool":
        extra = {"tools": [TOOL], "tool_choice": "required"}
    if not stream:
        answer = await client.chat.completions.create(model=model, messages=messages, **greedy, **extra)
        message = answer.choices[0].message
        if kind == "tool":
            return json.dumps([[c.function.name, c.function.arguments] for c in message.tool_calls or []])
        return message.content
    chunks = await client.chat.completions.create(
        model=model, messages=messages, stream=True, **greedy, **extra
    )
    text, calls = "", {}
    async for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            name, arguments = calls.get(call.index, ["", ""])
            calls[call.index] = [
                name + (call.function.name or ""),
                arguments + (call.function.arguments or ""),
            ]
    return json.dumps([calls[i] for i in sorted(calls)]) if kind == "tool" else text


REQUESTS = [
    (kind, model, stream)
    for kind in ("plain", "json", "tool")
    for model in ("tiny", "ad1")
    for stream in (False, True)
]


def test_tp2_server_answers_like_the_single_process_server(tp_server, server):
    async def answers(thread) -> list[str]:
        async with thread.async_client() as client:
            return list(await asyncio.gather(*(ask(client, *request) for request in REQUESTS)))

    expected = asyncio.run(asyncio.wait_for(answers(server), 120))
    got = asyncio.run(asyncio.wait_for(answers(tp_server), 120))
    assert got == expected
    for (kind, _, _), text in zip(REQUESTS, got, strict=True):
        if kind == "json":
            jsonschema.validate(json.loads(text), SCHEMA)
        if kind == "tool":  # a call may be cut by max_tokens; the ones made name the tool
            assert all(name == "get_weather" for name, _ in json.loads(text))
