"""Tools as data: ToolSpec validation and the OpenAI dict form, the generic call format
(``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``) as a grammar for each
``tool_choice`` (checked token by token with the real SmolLM2 tokenizer through the llguidance
backend), parsing calls back out of a finished answer, and the generic system prompt."""

from __future__ import annotations

import re

import pytest
from llguidance import LLMatcher

from loomlm.common.errors import RequestError
from loomlm.grammar.backends.llguidance import LlguidanceBackend
from loomlm.grammar.specs import OutputParseError, resolve_response_format
from loomlm.grammar.tool_format import no_tool_call_format, tool_call_format, tools_system_prompt
from loomlm.grammar.tool_specs import (
    ToolCall,
    ToolDefinitionError,
    ToolSpec,
    new_tool_call_id,
    parse_tool_calls,
    parse_tool_calls_until_cut,
)

WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
COUNT = ToolSpec(
    "count",
    "Count to n.",
    {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
        "additionalProperties": False,
    },
)
TOOLS = [WEATHER, COUNT]


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


PARIS = call("get_weather", '{"city":"Paris"}')
THREE = call("count", '{"n":3}')


@pytest.fixture(scope="module")
def backend(tokenizer):
    backend = LlguidanceBackend(tokenizer, len(tokenizer))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def accepts(backend, tokenizer):
    """``accepts(fmt, text)``: the grammar takes ``text`` token by token and may end there."""

    def check(fmt, text: str) -> bool:
        state = backend.new_state(
            backend.submit(backend.prepare(resolve_response_format(fmt))).result(timeout=60)
        )
        for token_id in tokenizer.encode(text, add_special_tokens=False):
            if not state.accept_token(token_id):
                return False
        return state.is_accepting()

    return check


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


# -- tool_call_format ---------------------------------------------------------------------------------


def test_auto_builds_one_tag_per_tool_in_the_generic_format():
    fmt = tool_call_format(TOOLS, "auto")
    assert (fmt.min_tags, fmt.max_tags) == (0, None)
    tag = fmt.tags[0]
    assert tag.trigger == "<tool_call>"
    assert tag.begin == '<tool_call>\n{"name": "get_weather", "arguments": '
    assert tag.end == "}\n</tool_call>"
    assert tag.schema == WEATHER.parameters
    assert [t.begin for t in fmt.tags][1] == '<tool_call>\n{"name": "count", "arguments": '
    assert (tool_call_format(TOOLS, None).min_tags, tool_call_format(TOOLS, "auto", False).max_tags) == (0, 1)


def test_auto_allows_text_and_any_number_of_valid_calls(accepts):
    fmt = tool_call_format(TOOLS, "auto")
    assert accepts(fmt, "The answer is 4.")
    assert accepts(fmt, f"Let me check. {PARIS}")
    assert accepts(fmt, PARIS + THREE + call("count", '{"n":9}'))
    assert not accepts(fmt, call("search", "{}"))  # not a tool
    assert not accepts(fmt, call("count", '{"n":0}'))  # violates the schema
    assert not accepts(fmt, call("count", '{"city":"Paris"}'))  # another tool's arguments


def test_auto_without_parallel_calls_allows_at_most_one(accepts):
    fmt = tool_call_format(TOOLS, "auto", parallel_tool_calls=False)
    assert accepts(fmt, "No call.")
    assert accepts(fmt, f"Checking. {THREE}")
    assert not accepts(fmt, PARIS + THREE)
    assert not accepts(fmt, f"{PARIS} and then <tool_call>")  # not even as free text


def test_required_needs_a_call_and_starts_with_it(accepts):
    fmt = tool_call_format(TOOLS, "required")
    assert (fmt.min_tags, fmt.max_tags, len(fmt.tags), fmt.free_text) == (1, None, 2, False)
    assert not accepts(fmt, "I would rather not.")
    assert accepts(fmt, f"{PARIS}{THREE}")
    assert not accepts(fmt, f"Sure. {PARIS}")  # the answer is the calls alone
    single = tool_call_format(TOOLS, "required", parallel_tool_calls=False)
    assert (single.min_tags, single.max_tags) == (1, 1)
    assert not accepts(single, PARIS + THREE)


def test_a_named_tool_must_be_called_and_only_it(accepts):
    named = {"type": "function", "function": {"name": "count"}}
    fmt = tool_call_format(TOOLS, named, parallel_tool_calls=False)
    begin = '<tool_call>\n{"name": "count", "arguments": '
    assert ([t.begin for t in fmt.tags], fmt.min_tags, fmt.max_tags) == ([begin], 1, 1)
    assert accepts(fmt, THREE)
    assert not accepts(fmt, PARIS)
    assert not accepts(fmt, "Nothing to call.")
    assert not accepts(fmt, THREE + THREE)
    assert tool_call_format(TOOLS, named).max_tags is None  # parallel: more calls of it


def test_none_returns_no_format_and_the_ban_grammar_has_no_trigger(accepts):
    assert tool_call_format(TOOLS, "none") is None
    assert tool_call_format([], "auto") is None  # nothing to call
    grammar = no_tool_call_format()
    assert LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(grammar.text), None) == ""
    assert accepts(grammar, "Plain text, even <tool_ or </tool_call>.")
    assert accepts(grammar, "")
    assert not accepts(grammar, f"Sneaky: {PARIS}")


def test_openai_dicts_are_accepted_as_tools():
    fmt = tool_call_format([WEATHER.to_openai(), COUNT.to_openai()], "required")
    assert [t.schema for t in fmt.tags] == [WEATHER.parameters, COUNT.parameters]


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([WEATHER, WEATHER.to_openai()], "auto", "two tools are named 'get_weather'"),
        (TOOLS, {"type": "function", "function": {"name": "search"}}, "'search', which is not among"),
        ([], "required", "'required' needs at least one tool"),
        ([], {"type": "function", "function": {"name": "count"}}, "no tools were given"),
        (TOOLS, "any", "tool_choice must be 'auto', 'required', 'none' or"),
        (TOOLS, "count", "got 'count'"),
        (TOOLS, True, "got True"),
        (TOOLS, {"type": "function", "name": "count"}, "a named tool_choice must be"),
        (TOOLS, {"type": "custom", "function": {"name": "count"}}, "a named tool_choice must be"),
        (WEATHER, "auto", "tools must be a list"),
        ("count", "auto", "tools must be a list"),
    ],
)
def test_bad_tool_lists_and_choices_are_refused_clearly(tools, choice, message):
    with pytest.raises(ToolDefinitionError, match=re.escape(message)):
        tool_call_format(tools, choice)


DATED = {
    "type": "object",
    "properties": {"day": {"type": "string", "format": "date"}, "who": {"type": "string"}},
    "required": ["day", "who"],
    "additionalProperties": False,
}


def test_strict_tools_refuse_keywords_that_cannot_be_enforced_naming_the_tool():
    with pytest.raises(ToolDefinitionError, match=r"tool 'book': .*'format' at /properties/day/format"):
        tool_call_format([ToolSpec("book", "", DATED)])


def test_non_strict_tools_drop_them_from_the_grammar_and_validate_after(accepts):
    loose = ToolSpec("book", "", DATED, strict=False)
    fmt = tool_call_format([loose], "required")
    assert fmt.tags[0].schema["properties"]["day"] == {"type": "string"}
    assert loose.parameters["properties"]["day"]["format"] == "date"  # the spec is untouched
    assert accepts(fmt, call("book", '{"day":"2023-02-29","who":"me"}'))  # the grammar's superset
    with pytest.raises(OutputParseError, match="is not a 'date'"):
        parse_tool_calls(call("book", '{"day":"2023-02-29","who":"me"}'), [loose])


def test_invalid_schemas_for_the_grammar_name_the_tool():
    never = {"type": "object", "properties": {"x": {"type": "integer", "minimum": 3, "maximum": 1}}}
    with pytest.raises(ToolDefinitionError, match="tool 'never'"):
        tool_call_format([ToolSpec("never", "", never | {"required": ["x"]})])


# -- the system prompt --------------------------------------------------------------------------------


def test_system_prompt_lists_the_tools_and_the_exact_format():
    prompt = tools_system_prompt(TOOLS)
    assert (
        '{"name": "get_weather", "description": "Current weather in a city.", "parameters": '
        '{"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, '
        '"required": ["city"], "additionalProperties": false}}'
    ) in prompt
    assert '"name": "count"' in prompt
    assert (
        '<tool_call>\n{"name": "<function name>", "arguments": <arguments as a JSON object>}\n</tool_call>'
        in prompt
    )
    example = prompt[prompt.index("For example:") :]
    _, calls = parse_tool_calls(example, TOOLS)  # the example is a valid call of the first tool
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "..."})]


def test_system_prompt_needs_tools():
    with pytest.raises(ToolDefinitionError, match="at least one tool"):
        tools_system_prompt([])
