"""The generic call format (``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>``) as a grammar
for each ``tool_choice``, checked token by token with the real SmolLM2 tokenizer through the
llguidance backend; strict and non-strict tool schemas; the generic system prompt."""

from __future__ import annotations

import re

import pytest
from llguidance import LLMatcher
from tool_spec_cases import COUNT, PARIS, THREE, TOOLS, WEATHER, call

from loomlm.grammar.specs import OutputParseError
from loomlm.grammar.tool_format import no_tool_call_format, tool_call_format, tools_system_prompt
from loomlm.grammar.tool_specs import ToolDefinitionError, ToolSpec, parse_tool_calls

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


def test_auto_allows_text_and_any_number_of_valid_calls(llg_accepts):
    fmt = tool_call_format(TOOLS, "auto")
    assert llg_accepts(fmt, "The answer is 4.")
    assert llg_accepts(fmt, f"Let me check. {PARIS}")
    assert llg_accepts(fmt, PARIS + THREE + call("count", '{"n":9}'))
    assert not llg_accepts(fmt, call("search", "{}"))  # not a tool
    assert not llg_accepts(fmt, call("count", '{"n":0}'))  # violates the schema
    assert not llg_accepts(fmt, call("count", '{"city":"Paris"}'))  # another tool's arguments


def test_auto_without_parallel_calls_allows_at_most_one(llg_accepts):
    fmt = tool_call_format(TOOLS, "auto", parallel_tool_calls=False)
    assert llg_accepts(fmt, "No call.")
    assert llg_accepts(fmt, f"Checking. {THREE}")
    assert not llg_accepts(fmt, PARIS + THREE)
    assert not llg_accepts(fmt, f"{PARIS} and then <tool_call>")  # not even as free text


def test_required_needs_a_call_and_starts_with_it(llg_accepts):
    fmt = tool_call_format(TOOLS, "required")
    assert (fmt.min_tags, fmt.max_tags, len(fmt.tags), fmt.free_text) == (1, None, 2, False)
    assert not llg_accepts(fmt, "I would rather not.")
    assert llg_accepts(fmt, f"{PARIS}{THREE}")
    assert not llg_accepts(fmt, f"Sure. {PARIS}")  # the answer is the calls alone
    single = tool_call_format(TOOLS, "required", parallel_tool_calls=False)
    assert (single.min_tags, single.max_tags) == (1, 1)
    assert not llg_accepts(single, PARIS + THREE)


def test_a_named_tool_must_be_called_and_only_it(llg_accepts):
    named = {"type": "function", "function": {"name": "count"}}
    fmt = tool_call_format(TOOLS, named, parallel_tool_calls=False)
    begin = '<tool_call>\n{"name": "count", "arguments": '
    assert ([t.begin for t in fmt.tags], fmt.min_tags, fmt.max_tags) == ([begin], 1, 1)
    assert llg_accepts(fmt, THREE)
    assert not llg_accepts(fmt, PARIS)
    assert not llg_accepts(fmt, "Nothing to call.")
    assert not llg_accepts(fmt, THREE + THREE)
    assert tool_call_format(TOOLS, named).max_tags is None  # parallel: more calls of it


def test_none_returns_no_format_and_the_ban_grammar_has_no_trigger(llg_accepts):
    assert tool_call_format(TOOLS, "none") is None
    assert tool_call_format([], "auto") is None  # nothing to call
    grammar = no_tool_call_format()
    assert LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(grammar.text), None) == ""
    assert llg_accepts(grammar, "Plain text, even <tool_ or </tool_call>.")
    assert llg_accepts(grammar, "")
    assert not llg_accepts(grammar, f"Sneaky: {PARIS}")


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


def test_non_strict_tools_drop_them_from_the_grammar_and_validate_after(llg_accepts):
    loose = ToolSpec("book", "", DATED, strict=False)
    fmt = tool_call_format([loose], "required")
    assert fmt.tags[0].schema["properties"]["day"] == {"type": "string"}
    assert loose.parameters["properties"]["day"]["format"] == "date"  # the spec is untouched
    assert llg_accepts(fmt, call("book", '{"day":"2023-02-29","who":"me"}'))  # the grammar's superset
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
