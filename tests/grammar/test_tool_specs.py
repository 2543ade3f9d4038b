"""Tools as data: ToolSpec validation and the OpenAI dict form, call ids, and parsing calls back out of
a finished answer (whole, or cut by max_tokens)."""

from __future__ import annotations

import re

import pytest
from tool_spec_cases import COUNT, PARIS, THREE, TOOLS, WEATHER, call

from loomlm.common.errors import RequestError
from loomlm.grammar.specs import OutputParseError
from loomlm.grammar.tool_specs import (
    ToolCall,
    ToolDefinitionError,
    ToolSpec,
    new_tool_call_id,
    parse_tool_calls,
    parse_tool_calls_until_cut,
)

# -- ToolSpec ---------------------------------------------------------------------------------------


def test_a_tool_definition_error_is_a_request_error():
    assert issubclass(ToolDefinitionError, RequestError)


@pytest.mark.parametrize("name", ["", "has space", "a" * 65, "dots.not.allowed", "naïve", None, "x\n"])
def test_tool_names_follow_the_openai_rule(name):
    with pytest.raises(ToolDefinitionError, match="tool name"):
        ToolSpec(name, "", {"type": "object"})


def test_accepted_names_and_object_schemas():
    assert ToolSpec("a" * 64, "", {"type": "object"}).name == "a" * 64
    assert ToolSpec("A-b_9", "", {"properties": {"x": {}}}).parameters == {"properties": {"x": {}}}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ([], "must be a JSON Schema dict"),
        ({"type": "string"}, "must be an object schema"),
        ({"type": "array", "properties": {}}, "must be an object schema"),
        ({}, "must be an object schema"),
        (
            {"type": "object", "properties": {"x": {"type": "nope"}}},
            "invalid parameters schema at /properties/x",
        ),
        ({"type": "object", "required": "x"}, "invalid parameters schema"),
    ],
)
def test_parameters_must_be_a_valid_object_schema(parameters, message):
    with pytest.raises(ToolDefinitionError, match=f"tool 'f': .*{re.escape(message)}"):
        ToolSpec("f", "", parameters)


def test_description_and_strict_are_checked():
    with pytest.raises(ToolDefinitionError, match="description must be a string"):
        ToolSpec("f", None, {"type": "object"})
    with pytest.raises(ToolDefinitionError, match="strict must be a bool"):
        ToolSpec("f", "", {"type": "object"}, strict="yes")


def test_openai_dict_round_trip():
    assert ToolSpec.from_openai(WEATHER.to_openai()) == WEATHER
    loose = ToolSpec("count", "Count.", COUNT.parameters, strict=False)
    assert loose.to_openai()["function"]["strict"] is False
    assert ToolSpec.from_openai(loose.to_openai()) == loose


def test_openai_dicts_bare_or_wrapped_with_defaults():
    bare = ToolSpec.from_openai({"name": "ping"})
    assert bare == ToolSpec("ping", "", {"type": "object", "properties": {}, "additionalProperties": False})
    wrapped = {"type": "function", "function": {"name": "ping", "description": None, "strict": None}}
    assert ToolSpec.from_openai(wrapped) == bare  # strict absent or null: loomlm's exact default


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("get_weather", "must be a dict"),
        ({"type": "retrieval", "function": {"name": "f"}}, "type must be 'function'"),
        ({"type": "function"}, "needs a 'function' dict"),
        ({"type": "function", "function": "f"}, "needs a 'function' dict"),
        ({"type": "function", "function": {"description": "no name"}}, "needs a 'name'"),
        ({"type": "function", "function": {"name": "f"}, "extra": 1}, "unknown keys \\['extra'\\]"),
        ({"name": "f", "params": {}}, "tool 'f' has unknown keys \\['params'\\]"),
        ({"name": "f", "parameters": {"type": "string"}}, "must be an object schema"),
    ],
)
def test_malformed_openai_dicts_are_refused_clearly(tool, message):
    with pytest.raises(ToolDefinitionError, match=message):
        ToolSpec.from_openai(tool)


# -- ToolCall and parse_tool_calls --------------------------------------------------------------------


def test_call_ids_look_like_openai_ids():
    ids = {new_tool_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


def test_tool_call_in_openai_form():
    assert ToolCall("call_1", "count", {"n": 2}).to_openai() == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "count", "arguments": '{"n": 2}'},
    }


def test_parse_returns_the_content_and_each_call_in_order():
    text = f"Let me look.\n{PARIS}\n{THREE} "
    content, calls = parse_tool_calls(text, TOOLS)
    assert content == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}), ("count", {"n": 3})]
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", c.id) for c in calls)
    assert calls[0].id != calls[1].id


def test_parse_accepts_openai_dicts_loose_whitespace_and_no_calls():
    spaced = '<tool_call> {"arguments": {"n": 1}, "name": "count"}\n\n</tool_call>'
    assert parse_tool_calls(spaced, [COUNT.to_openai()])[1][0].arguments == {"n": 1}
    assert parse_tool_calls("  Just an answer. ", TOOLS) == ("Just an answer.", [])
    # a "<tool_call>" inside a string argument is part of the call, not a new block
    content, calls = parse_tool_calls(call("get_weather", '{"city":"<tool_call>"}') + " ok", TOOLS)
    assert (content, calls[0].arguments) == ("ok", {"city": "<tool_call>"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<tool_call>\nnot json\n</tool_call>", "does not hold valid JSON"),
        ('<tool_call>\n{"name": "count", "arguments": {"n": 1}}', "not closed by </tool_call>"),
        ('<tool_call>{"name": "count", "arguments": {"n": 1}} trailing</tool_call>', "not closed"),
        (call("search", "{}"), "unknown tool 'search'; tools: \\['count', 'get_weather'\\]"),
        ('<tool_call>{"name": "count"}</tool_call>', 'must be {"name": ..., "arguments"'),
        ('<tool_call>{"name": "count", "arguments": {"n": 1}, "id": 1}</tool_call>', "got \\['arguments'"),
        ('<tool_call>["count", {}]</tool_call>', "got list"),
        (call("count", '"{\\"n\\": 1}"'), "arguments of tool 'count' must be a JSON object"),
        (call("count", '{"n": 0}'), "tool 'count' violate its schema at /n: 0 is less than the minimum"),
        (call("get_weather", '{"city": "x", "unit": "k"}'), "at /unit"),
        (call("get_weather", "{}"), "'city' is a required property"),
    ],
)
def test_parse_refuses_broken_calls(text, message):
    with pytest.raises(OutputParseError, match=message):
        parse_tool_calls(text, TOOLS)


def test_a_text_cut_by_max_tokens_keeps_the_complete_calls_before_the_cut():
    whole = f"{PARIS}\n{THREE}"
    for end in range(len(PARIS) + 2, len(whole)):  # cut anywhere inside the second call
        content, calls, cut = parse_tool_calls_until_cut(whole[:end], TOOLS)
        assert ([c.name for c in calls], cut) == (["get_weather"], True), whole[:end]
        assert content == ""
    _, calls, cut = parse_tool_calls_until_cut(whole, TOOLS)
    assert ([c.name for c in calls], cut) == (["get_weather", "count"], False)
    assert parse_tool_calls_until_cut("just text", TOOLS) == ("just text", [], False)
    with pytest.raises(OutputParseError, match="minimum"):  # a complete invalid call still raises
        parse_tool_calls_until_cut(call("count", '{"n":0}') + "\n<tool", TOOLS)


def test_parse_checks_formats():
    dated = ToolSpec(
        "book", "", {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}
    )
    assert parse_tool_calls(call("book", '{"day": "2024-02-29"}'), [dated])[1][0].arguments
    with pytest.raises(OutputParseError, match="is not a 'date'"):
        parse_tool_calls(call("book", '{"day": "2023-02-29"}'), [dated])
