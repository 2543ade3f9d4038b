"""Tools through the official client, over the caller model (a random model writes whitespace under
a required-call grammar until max_tokens): tool_choice auto, required, named and none, parallel or
not, calls streamed as OpenAI deltas that rebuild the non-streamed calls, tool results in the
conversation; and instructor extracting a validated Pydantic object in JSON_SCHEMA and TOOLS modes."""

from __future__ import annotations

import json
from typing import Literal

import instructor
import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field
from server_helpers import API_KEY, ServerThread, run

CHAT = [{"role": "user", "content": "Tell me about the weather."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 16},
                "limit": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["query", "limit"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, SEARCH]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
SEEDS = range(8)


def check_call(call, allowed: set[str]) -> None:
    """An OpenAI tool call naming an allowed tool, its arguments a JSON string valid under its schema."""
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in allowed
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


# -- tools ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tool_choice", "allowed"),
    [
        ("required", {"get_weather", "search"}),
        ({"type": "function", "function": {"name": "search"}}, {"search"}),
    ],
)
@pytest.mark.parametrize("parallel", [True, False])
def test_required_and_named_tool_choices_call_with_valid_arguments(caller, tool_choice, allowed, parallel):
    called = 0
    for seed in SEEDS:
        choice = caller.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=64, seed=seed, tools=TOOLS, tool_choice=tool_choice,
            parallel_tool_calls=parallel,
        ).choices[0]  # fmt: skip
        assert choice.finish_reason in ("tool_calls", "length")  # never a text answer
        if choice.finish_reason == "tool_calls":
            called += 1
            assert choice.message.tool_calls and not choice.message.content
            assert parallel or len(choice.message.tool_calls) == 1
            for call in choice.message.tool_calls:
                check_call(call, allowed)
    assert called >= 2, "too few calls to mean anything"


def test_tool_choice_none_and_auto(caller):
    reasons = set()
    for seed in SEEDS:
        none = caller.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=24, seed=seed, tools=TOOLS, tool_choice="none"
        ).choices[0]
        assert none.message.tool_calls is None and "<tool_call>" not in none.message.content
        auto = caller.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=48, seed=seed, tools=TOOLS
        ).choices[0]
        reasons.add(auto.finish_reason)
        for call in auto.message.tool_calls or []:
            check_call(call, set(SCHEMAS))
    assert reasons <= {"stop", "length", "tool_calls"}


def test_streamed_tool_calls_rebuild_the_non_streamed_calls(caller):
    streamed_any = False
    for seed in SEEDS:
        options = dict(
            model="tiny", messages=CHAT, max_tokens=64, seed=seed, tools=TOOLS, tool_choice="required"
        )
        full = caller.chat.completions.create(**options).choices[0]
        calls: dict[int, dict] = {}
        reasons = []
        for chunk in caller.chat.completions.create(stream=True, **options):
            delta = chunk.choices[0].delta
            reasons.append(chunk.choices[0].finish_reason)
            for part in delta.tool_calls or []:
                if part.index not in calls:  # the first delta of a call: id, type and name, once
                    assert part.id.startswith("call_") and part.type == "function" and part.function.name
                    calls[part.index] = {"id": part.id, "name": part.function.name, "arguments": ""}
                else:
                    assert part.id is None and part.function.name is None
                calls[part.index]["arguments"] += part.function.arguments or ""
        assert [r for r in reasons if r] == [full.finish_reason]
        if full.finish_reason != "tool_calls":
            continue
        streamed_any = True
        assert sorted(calls) == list(range(len(full.message.tool_calls)))
        for index, call in sorted(calls.items()):
            expected = full.message.tool_calls[index]
            assert call["name"] == expected.function.name
            assert json.loads(call["arguments"]) == json.loads(expected.function.arguments)
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    assert streamed_any


def test_a_conversation_with_a_tool_result_continues(caller):
    messages = [
        *CHAT,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "c"}'},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees, rain"},
    ]  # fmt: skip
    choice = caller.chat.completions.create(
        model="tiny", messages=messages, tools=TOOLS, max_tokens=8
    ).choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")


# -- instructor -------------------------------------------------------------------------------------------
class Pet(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a closed object: the grammar ends it after "age"

    name: str = Field(max_length=10)
    kind: Literal["cat", "dog"]
    age: int = Field(ge=0, le=30)


@pytest.mark.parametrize("mode", [instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS])
def test_instructor_extracts_a_validated_object(caller, mode):
    patched = instructor.from_openai(caller, mode=mode)
    pet = patched.chat.completions.create(
        model="tiny",
        response_model=Pet,
        messages=[{"role": "user", "content": "Rex is a 3 year old dog."}],
        max_tokens=120,
        max_retries=0,
        seed=0,  # the caller model samples: a fixed seed keeps the test deterministic
    )
    assert isinstance(pet, Pet)


# -- the real model -------------------------------------------------------------------------------------
class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=150)


@pytest.mark.slow  # the real SmolLM2-135M-Instruct behind the server
def test_the_real_model_extracts_and_calls_through_the_server(smollm2_dir):
    from loomlm import AsyncLLM
    from loomlm.server import ServerConfig, build_app

    llm = AsyncLLM(str(smollm2_dir), max_model_len=2048)
    thread = ServerThread(build_app(llm, ServerConfig(api_key=API_KEY))).start()
    try:
        client = thread.client()
        [model] = [m.id for m in client.models.list().data]
        for mode in (instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS):
            person = instructor.from_openai(client, mode=mode).chat.completions.create(
                model=model,
                response_model=Person,
                messages=[{"role": "user", "content": "Alice is 30 years old."}],
                max_tokens=100,
                temperature=0,
                max_retries=0,
            )
            assert isinstance(person, Person)
        question = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
        calls: dict[int, dict] = {}
        reasons = []
        for chunk in client.chat.completions.create(
            model=model, messages=question, tools=TOOLS, tool_choice="required", max_tokens=80, temperature=0,
            stream=True,
        ):  # fmt: skip
            reasons.append(chunk.choices[0].finish_reason)
            for part in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(part.index, {"name": part.function.name, "arguments": ""})
                call["arguments"] += part.function.arguments or ""
        assert [r for r in reasons if r] == ["tool_calls"] and calls
        for call in calls.values():
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    finally:
        thread.stop()
        run(llm.shutdown())
