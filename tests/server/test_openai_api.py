"""The OpenAI routes through the official client: chat and completions, streamed and not, with n,
logprobs, stop, seed and usage; response formats (json_schema strict, json_object, and loomlm's
regex, choice and grammar); adapters as models; /v1/models, /health, /version, /metrics. Tools and
instructor are in test_tools.py."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest
from server_helpers import run

from loomlm import SamplingParams

CHAT = [{"role": "user", "content": "Tell me about the weather."}]
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
SEEDS = range(8)


# -- chat and completions -----------------------------------------------------------------------------
def test_chat_equals_the_sdk_and_reports_usage(client, llm):
    response = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, **GREEDY)
    [expected] = run(llm.chat(CHAT, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)))
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert response.model == "tiny" and choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content == expected.outputs[0].text and choice.finish_reason == "length"
    assert choice.message.tool_calls is None
    usage = response.usage
    assert usage.prompt_tokens == len(expected.prompt_token_ids) and usage.completion_tokens == 8
    assert usage.total_tokens == usage.prompt_tokens + 8


def test_chat_stream_joins_to_the_full_answer_and_ends_with_usage(client):
    full = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=CHAT,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons.count("length") == 1 and reasons[-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_n_seed_stop_and_penalties(client):
    def ask(**options):
        return client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, **options)

    first, again = ask(n=3, seed=5, temperature=1.0), ask(n=3, seed=5, temperature=1.0)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.usage.completion_tokens == first.usage.total_tokens - first.usage.prompt_tokens <= 36
    greedy = ask(**GREEDY).choices[0].message.content
    stop = greedy[4:8]
    stopped = ask(stop=[stop], **GREEDY).choices[0]
    assert stopped.finish_reason == "stop" and stop not in stopped.message.content
    assert greedy.startswith(stopped.message.content)
    penalised = ask(presence_penalty=1.5, frequency_penalty=1.0, top_p=0.9, max_completion_tokens=6)
    assert penalised.usage.completion_tokens <= 6


def test_chat_logprobs_streamed_and_not(client):
    response = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, logprobs=True, top_logprobs=3, **GREEDY
    )
    content = response.choices[0].logprobs.content
    assert (
        len(content) == 6 and "".join(entry.token for entry in content) == response.choices[0].message.content
    )
    for entry in content:
        assert (
            len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        )
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy: the best token
        assert bytes(entry.bytes).decode() == entry.token
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=6, logprobs=True, top_logprobs=3, stream=True, **GREEDY
        )
    )
    streamed = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_completions_many_prompts_n_and_logprobs(client):
    prompts = ["The sky is", "Numbers:"]
    response = client.completions.create(model="tiny", prompt=prompts, n=2, max_tokens=5, logprobs=2, seed=3)
    assert response.object == "text_completion" and [c.index for c in response.choices] == [0, 1, 2, 3]
    for choice in response.choices:
        assert choice.finish_reason in ("stop", "length")
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
        assert "".join(lp.tokens) == choice.text and all(len(top) <= 2 for top in lp.top_logprobs)
    assert response.usage.completion_tokens <= 20
    by_ids = client.completions.create(model="tiny", prompt=[1, 2, 3, 4], max_tokens=4, temperature=0)
    assert by_ids.usage.prompt_tokens == 4 and by_ids.choices[0].finish_reason in ("stop", "length")


def test_completion_stream_of_two_prompts_interleaves_and_joins(client):
    prompts = ["Once upon a time", "In the beginning"]
    options = dict(model="tiny", prompt=prompts, n=2, max_tokens=6, seed=11, temperature=1.0)
    full = client.completions.create(**options)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **options))
    texts: dict[int, str] = {}
    finished: list[int] = []
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finished.append(choice.index)
    assert sorted(finished) == [0, 1, 2, 3]
    assert texts == {c.index: c.text for c in full.choices}
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens


# -- response formats ---------------------------------------------------------------------------------
PET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "kind": {"type": "string", "enum": ["cat", "dog"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
    },
    "required": ["name", "kind", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_strict_output_parses_and_validates(client, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "pet", "schema": PET_SCHEMA, "strict": True}}
    for seed in SEEDS[:3]:
        options = dict(model="tiny", messages=CHAT, max_tokens=80, seed=seed, response_format=fmt)
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **options))
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            assert chunks[-1].choices[0].finish_reason == "stop"
        else:
            choice = client.chat.completions.create(**options).choices[0]
            text = choice.message.content
            assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(text), PET_SCHEMA)


def test_regex_choice_grammar_and_json_object_formats(client):
    def answer(fmt, **options):
        response = client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=40, response_format=fmt, **options
        )
        return response.choices[0]

    for seed in SEEDS[:3]:
        regex = answer({"type": "regex", "regex": r"[0-9]{3}-[a-z]{2}"}, seed=seed)
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", regex.message.content) and regex.finish_reason == "stop"
        choice = answer({"type": "choice", "choices": ["red", "green", "blue"]}, seed=seed)
        assert choice.message.content in ("red", "green", "blue")
        grammar = answer(
            {"type": "grammar", "grammar": 'start: ("yes" | "no") " " NUM\nNUM: /[0-9]/'}, seed=seed
        )
        assert re.fullmatch(r"(yes|no) [0-9]", grammar.message.content)
        assert answer({"type": "text"}, seed=seed).finish_reason in ("stop", "length")
    finished = [
        c for c in (answer({"type": "json_object"}, seed=s, n=2) for s in SEEDS) if c.finish_reason == "stop"
    ]
    assert finished, "no json_object answer finished"
    for choice in finished:
        json.loads(choice.message.content)


# -- adapters as models ---------------------------------------------------------------------------------
def test_an_adapter_named_as_model_runs_that_adapter(client, llm):
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    for name in ("ad1", "ad2"):
        [expected] = run(llm.chat(CHAT, params, adapter=name))
        got = client.chat.completions.create(model=name, messages=CHAT, max_tokens=8, **GREEDY)
        assert got.model == name and got.choices[0].message.content == expected.outputs[0].text
    completion = client.completions.create(model="ad1", prompt="Hello", max_tokens=4, temperature=0)
    [expected] = run(llm.generate("Hello", SamplingParams(temperature=0, max_tokens=4), adapter="ad1"))
    assert completion.choices[0].text == expected.outputs[0].text


# -- info routes ----------------------------------------------------------------------------------------
def test_models_health_version_and_metrics(server, client, adapter_dirs):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) >= {"tiny", "ad1", "ad2"}
    assert models["ad1"].parent == "tiny" and models["ad1"].root == str(adapter_dirs["all8"].resolve())
    assert models["tiny"].parent is None and models["tiny"].owned_by == "loomlm"
    assert client.models.retrieve("ad2").id == "ad2"
    open_client = httpx.Client(base_url=server.url, timeout=30)  # no key: open routes only
    health = open_client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    metrics = open_client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "loomlm:kv_cache_usage_perc" in metrics.text and "loomlm:request_success_total" in metrics.text
    assert re.search(
        r'loomlm:http_requests_total\{method="POST",path="/v1/chat/completions",status="200"\}', metrics.text
    )
    with server.http() as http:
        assert http.get("/version").json()["version"]
