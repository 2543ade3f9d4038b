"""The prompt a conversation with tools becomes (``loomlm.tool_prompts``): tools in the system message
for templates without tool support, tools and structured calls passed through for templates with
it, and calls and results rendered Hermes style where the template cannot."""

from __future__ import annotations

import copy

from tool_support import QUESTION, get_weather, search

from loomlm.grammar.tool_specs import parse_tool_calls
from loomlm.tool_calls import tool_set
from loomlm.tool_prompts import normalize_messages, template_renders_tools, tool_messages


def test_smollm2_gets_the_tools_in_its_system_message(tokenizer):
    assert not template_renders_tools(tokenizer)
    tools = tool_set([get_weather])
    messages, extra = tool_messages(QUESTION, tools, native=False)
    assert (
        extra == {} and messages[0]["role"] == "system" and '"name": "get_weather"' in messages[0]["content"]
    )
    with_system = [{"role": "system", "content": "Be brief."}, *QUESTION]
    merged, _ = tool_messages(with_system, tools, native=False)
    assert (
        len(merged) == 2
        and merged[0]["content"].startswith("Be brief.\n\n")
        and "<tools>" in merged[0]["content"]
    )


def test_a_template_with_tool_support_gets_tools_and_the_messages_as_they_are(tokenizer):
    native = copy.copy(tokenizer)
    native.chat_template = (
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% for c in m.tool_calls or [] %}"
        "[{{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}{% endfor %}"
    )
    assert template_renders_tools(native)
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    messages, extra = tool_messages(history, tool_set([get_weather]), native=True)
    assert [t["function"]["name"] for t in extra["tools"]] == ["get_weather"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert messages[2]["role"] == "tool"
    text = native.apply_chat_template(messages, tools=extra["tools"], tokenize=False)
    assert text.startswith("TOOLS:get_weather") and '[get_weather {"city": "Paris"}]' in text


def test_tool_messages_are_rendered_hermes_style_without_tool_support(tokenizer):
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "search", "arguments": {"query": "pizza"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": ["p1", "p2"]},
    ]
    messages = normalize_messages(history, native=False)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "search", "arguments": {"query": "pizza"}}\n</tool_call>'
    )
    assert messages[2]["content"] == (
        '<tool_response>\nsunny\n</tool_response>\n<tool_response>\n["p1", "p2"]\n</tool_response>'
    )
    _, calls = parse_tool_calls(messages[1]["content"], tool_set([get_weather, search]).specs)
    assert [c.arguments for c in calls] == [{"city": "Paris"}, {"query": "pizza"}]
    tokenizer.apply_chat_template(messages, tokenize=False)  # SmolLM2's template renders it
