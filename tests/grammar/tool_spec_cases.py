"""Two tools as data (a weather lookup, a counter) and the text of a call in the generic format, shared
by the tool spec and tool format tests."""

from __future__ import annotations

from loomlm.grammar.tool_specs import ToolSpec

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
