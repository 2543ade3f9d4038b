"""Every error class with its status and an OpenAI error body: 400 (bad parameters, schemas, regexes,
tools, messages; FastAPI's 422 included), 401, 404, 413 (prompt and body), 429 (queue full), 500
(no traceback leaks), 503 (after stop_admitting), streamed requests included: an error found before
the first token is a status, not an event."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from server_helpers import API_KEY, metric

from loomlm.server import ServerConfig

CHAT = [{"role": "user", "content": "Hi."}]


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post_chat(http: httpx.Client, **fields) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": CHAT, "max_tokens": 4, **fields}
    )


BAD_CHATS = {
    "temperature": {"temperature": 500},
    "n": {"n": 1000},
    "max_tokens": {"max_tokens": 100_000},
    "logit_bias": {"logit_bias": {"42": 5}},
    "functions": {"functions": [{"name": "f"}]},
    "guided_regex": {"guided_regex": "[a-z]+"},
    "top_logprobs": {"top_logprobs": 3},
    "messages": {"messages": []},
    "messages.0.role": {"messages": [{"role": "wizard", "content": "x"}]},
    "messages.0.content": {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    },
    "stop": {"stop": ["x" * 300]},
    "response_format.type": {"response_format": {"type": "xml"}},
    "response_format.json_schema": {"response_format": {"type": "json_schema"}},
    "tool_choice": {"tool_choice": "required"},
    "chat_template_kwargs": {"chat_template_kwargs": {"chat_template": "{{ 1 }}"}},
    "seed": {"seed": -1},
}


@pytest.mark.parametrize("param", list(BAD_CHATS))
def test_bad_parameters_are_400_naming_the_parameter(server, param):
    with server.http() as http:
        error = error_of(post_chat(http, **BAD_CHATS[param]), 400)
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


SCHEMA_ERRORS = {
    "schema": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
    "regex": {"type": "regex", "regex": "(?<=a)b"},
    "choice": {"type": "choice", "choices": ["a", "a"]},
    "grammar": {"type": "grammar", "grammar": "start: undefined_rule"},
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", list(SCHEMA_ERRORS))
def test_unusable_response_formats_are_400_streamed_or_not(client, kind, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=4, response_format=SCHEMA_ERRORS[kind], stream=stream
        )
    assert caught.value.status_code == 400 and caught.value.body["message"]


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "missing"}}},
        {"tools": [TOOL, TOOL]},
        {"tools": [{"type": "function", "function": {"name": "g", "parameters": {"type": "array"}}}]},
        {"tools": [TOOL], "response_format": {"type": "json_object"}},
        {
            "tools": [TOOL],
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{"}}],
                }
            ],
        },
    ],
    ids=["name", "named-choice", "duplicate", "parameters", "with-format", "bad-arguments"],
)
def test_bad_tools_are_400(server, fields):
    with server.http() as http:
        assert error_of(post_chat(http, **fields), 400)["message"]


def test_malformed_json_and_unknown_fields(server):
    with server.http() as http:
        error = error_of(
            http.post(
                "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
        )
        assert "JSON" in error["message"]
        # Unknown fields are ignored, as OpenAI does; so are no-op hints.
        ok = post_chat(
            http, some_future_field=1, user="u", metadata={"a": "b"}, store=False, service_tier="auto"
        )
        assert ok.status_code == 200, ok.text


def test_unauthorized_is_401_and_open_routes_stay_open(server):
    for key in (None, "wrong-key"):
        with server.http(key) as http:
            error = error_of(post_chat(http), 401)
            assert error["code"] == "invalid_api_key"
            assert http.get("/v1/models").status_code == 401 and http.get("/version").status_code == 401
            assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong-key").models.list()


def test_unknown_model_and_route_are_404(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=CHAT)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="x", stream=True)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    with server.http() as http:
        assert error_of(http.get("/v1/nothing-here"), 404)["code"] == "not_found"


def test_prompts_over_the_context_and_bodies_over_the_bound_are_413(server, client):
    long_text = "word " * 600  # > max_model_len = 512 tokens: found by the engine
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": long_text}])
    assert caught.value.status_code == 413 and caught.value.body["code"] == "prompt_too_long"
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(model="tiny", prompt=list(range(1, 600)), stream=True)
    assert caught.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as caught:  # so long that it is refused untokenized
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ab" * 60_000}])
    assert caught.value.status_code == 413 and "characters" in caught.value.body["message"]
    with server.http() as http:  # a body over max_request_bytes (256 KiB here)
        error = error_of(post_chat(http, messages=[{"role": "user", "content": "x" * (300 << 10)}]), 413)
        assert error["code"] == "request_too_large"


def test_internal_errors_are_500_without_details(server, monkeypatch):
    from loomlm.server import routes_openai

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(routes_openai, "chat_inputs", explode)
    with server.http() as http:
        response = post_chat(http)
    error = error_of(response, 500)
    assert "secret" not in response.text and "Traceback" not in response.text
    assert error["type"] == "server_error"


def test_a_full_queue_is_429(make_server):
    thread, _ = make_server(
        ServerConfig(served_model_name="tiny", api_key=API_KEY, max_waiting=1), max_num_seqs=1
    )
    long = {"model": "tiny", "messages": CHAT, "max_tokens": 400, "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def main():
        async with httpx.AsyncClient(base_url=thread.url, headers=headers, timeout=60) as http:
            async with http.stream("POST", "/v1/chat/completions", json=long) as running:
                assert running.status_code == 200  # headers come with its first token: it runs
                waiting = asyncio.create_task(http.post("/v1/chat/completions", json=long))
                for _ in range(500):  # until the second waits in the engine's queue
                    if metric((await http.get("/metrics")).text, "loomlm:num_requests_waiting") == 1:
                        break
                    await asyncio.sleep(0.01)
                refused = await http.post("/v1/chat/completions", json={**long, "stream": False})
                waiting.cancel()
            return refused

    refused = asyncio.run(asyncio.wait_for(main(), 60))
    error = error_of(refused, 429)
    assert error["code"] == "queue_full" and refused.headers["retry-after"]


def test_after_stop_admitting_requests_and_health_are_503(make_server):
    thread, llm = make_server()
    client = thread.client()
    assert client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices
    llm.stop_admitting()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, stream=True)
    assert caught.value.status_code == 503
    with thread.http() as http:
        health = http.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "draining"}
        assert json.loads(post_chat(http).text)["error"]["type"] == "server_error"
