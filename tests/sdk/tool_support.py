"""The tools the function-calling tests share: typed Python functions, a Pydantic model and a JSON
Schema tool, one question that wants two of them, and the text of a call as the Hermes format writes
it."""

from __future__ import annotations

import enum
import json
from typing import Literal

from pydantic import BaseModel

QUESTION = [{"role": "user", "content": "What is the weather in Paris? Also search for pizza."}]


class Unit(str, enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: int | None = None) -> str:
    """Get the weather for a city.

    Args:
        city: The city.
        unit: Temperature unit.
        days: Forecast days.
    """
    return f"{city}: 20 {unit.value}"


def search(query: str, max_results: Literal[1, 2, 3] = 3) -> list[str]:
    """Search the web."""
    return [query] * max_results


class Lookup(BaseModel):
    """Look a word up in the dictionary."""

    word: str


SCHEMA_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [get_weather, search, Lookup, SCHEMA_TOOL]
NAMES = {"get_weather", "search", "lookup", "add"}


def call_text(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"
