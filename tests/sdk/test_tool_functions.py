"""Python objects as tools: the JSON Schema a typed function or a Pydantic model yields, docstring
descriptions, every refusal, ``as_tool`` over each kind, and typed arguments from a model's call
(grammar from ``tool_call_format``, call parsed by ``parse_tool_calls``, run by ``invoke``)."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from typing import Annotated, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from loomlm.grammar.specs import OutputParseError, resolve_response_format
from loomlm.grammar.tool_format import tool_call_format
from loomlm.grammar.tool_specs import ToolCall, ToolDefinitionError, ToolSpec, parse_tool_calls
from loomlm.tool_functions import (
    FunctionTool,
    ModelTool,
    SchemaTool,
    as_tool,
    parse_docstring,
    snake_case,
    strip_titles,
    tool_from_function,
    tool_from_model,
)


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@dataclasses.dataclass
class Point:
    lat: float
    lon: float


class Window(BaseModel):
    start: int
    end: int = 24


def get_weather(
    city: str,
    unit: Unit = Unit.CELSIUS,
    days: Annotated[int, Field(ge=1, le=7, description="Days ahead.")] = 1,
) -> str:
    """Get the weather forecast
    for a city.

    Longer explanation that is not the summary.

    Args:
        city: The city name,
            e.g. "Paris".
        unit (Unit): The temperature unit.
        days: Ignored: the Field describes it.

    Returns:
        The forecast.
    """
    return f"{city}: 20 {unit.value}, {days} days"


def test_a_simple_signature_gives_a_closed_object_schema_without_titles():
    tool = tool_from_function(get_weather)
    assert tool.spec.name == "get_weather"
    assert tool.spec.description == "Get the weather forecast for a city."
    assert tool.spec.parameters == {
        "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"}},
        "additionalProperties": False,
        "properties": {
            "city": {"description": 'The city name, e.g. "Paris".', "type": "string"},
            "unit": {"$ref": "#/$defs/Unit", "default": "celsius", "description": "The temperature unit."},
            "days": {
                "default": 1,
                "description": "Days ahead.",
                "maximum": 7,
                "minimum": 1,
                "type": "integer",
            },
        },
        "required": ["city"],
        "type": "object",
    }


def test_optional_literal_list_dict_models_and_dataclasses():
    def plan(
        where: Point,
        mode: Literal["walk", "bike"],
        stops: list[str],
        window: Optional[Window] = None,  # noqa: UP045 (the typing spelling must work too)
        weights: dict[str, float] | None = None,
        title: Annotated[str, "A plain string describes it."] = "trip",
    ) -> None:
        """Plan a trip."""

    schema = tool_from_function(plan).spec.parameters
    assert schema["required"] == ["where", "mode", "stops"]
    assert schema["properties"] == {
        "where": {"$ref": "#/$defs/Point"},
        "mode": {"enum": ["walk", "bike"], "type": "string"},
        "stops": {"items": {"type": "string"}, "type": "array"},
        "window": {"anyOf": [{"$ref": "#/$defs/Window"}, {"type": "null"}], "default": None},
        "weights": {
            "anyOf": [{"additionalProperties": {"type": "number"}, "type": "object"}, {"type": "null"}],
            "default": None,
        },
        "title": {"default": "trip", "description": "A plain string describes it.", "type": "string"},
    }
    assert set(schema["$defs"]) == {"Point", "Window"}
    assert "title" not in schema["$defs"]["Window"]
    assert schema["additionalProperties"] is False


def test_a_function_without_parameters_or_docstring():
    def ping() -> str:
        return "pong"

    tool = tool_from_function(ping)
    assert tool.spec == ToolSpec(
        "ping", "", {"additionalProperties": False, "properties": {}, "type": "object"}
    )
    assert tool.invoke({}) == "pong"


def test_name_description_and_strict_can_be_overridden():
    tool = tool_from_function(get_weather, name="weather", description="Weather.", strict=False)
    assert (tool.spec.name, tool.spec.description, tool.spec.strict) == ("weather", "Weather.", False)


def test_docstring_styles():
    google = """Summary here.

    Args:
        a (int): First,
            continued.
        *rest: Ignored.
        b: Second.

    Raises:
        ValueError: not an argument.
    """
    assert parse_docstring(google) == (
        "Summary here.",
        {"a": "First, continued.", "rest": "Ignored.", "b": "Second."},
    )
    rest = """Summary
    on two lines.

    :param a: First,
        continued.
    :param str b: Second.
    :type b: str
    :returns: nothing.
    """
    assert parse_docstring(rest) == ("Summary on two lines.", {"a": "First, continued.", "b": "Second."})
    assert parse_docstring(None) == ("", {})
    numbered = "Do.\n\n    Example:\n        x: not an argument.\n    Args:\n        x: An argument.\n"
    assert parse_docstring(numbered) == ("Do.", {"x": "An argument."})


def test_titles_are_stripped_but_a_property_named_title_is_kept():
    schema = {"title": "M", "properties": {"title": {"title": "Title", "type": "string"}}}
    assert strip_titles(schema) == {"properties": {"title": {"type": "string"}}}


def no_annotation(city, days: int) -> None: ...
def star_args(*cities: str) -> None: ...
def star_kwargs(city: str, **options: str) -> None: ...
def positional_only(city: str, /) -> None: ...
def bad_hint(city: NotAType) -> None: ...  # type: ignore[name-defined]  # noqa: F821
def private_name(_city: str) -> None: ...


class Opaque:
    pass


def opaque(thing: Opaque) -> None: ...


def callback(then: Callable[[], None]) -> None: ...


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (no_annotation, "tool 'no_annotation': parameter 'city' has no type annotation"),
        (star_args, "tool 'star_args': *cities cannot be a tool argument"),
        (star_kwargs, "tool 'star_kwargs': **options cannot be a tool argument"),
        (positional_only, "parameter 'city' is positional-only"),
        (bad_hint, "tool 'bad_hint': cannot read its signature"),
        (private_name, "tool 'private_name': parameter '_city' starts with '_'"),
        (opaque, "tool 'opaque': cannot build its arguments model"),
        (callback, "tool 'callback': cannot derive a JSON Schema"),
        (lambda x: x, "tool name '<lambda>' is invalid"),
        (Window, "expected a function, got ModelMetaclass"),
        (42, "expected a function, got int"),
    ],
)
def test_functions_that_cannot_be_tools_are_refused_naming_the_problem(fn, message):
    with pytest.raises(ToolDefinitionError, match=re.escape(message)):
        tool_from_function(fn)


def test_building_and_invoking_with_typed_arguments():
    tool = tool_from_function(get_weather)
    built = tool.build({"city": "Oslo", "unit": "fahrenheit"})
    assert (built.city, built.unit, built.days) == ("Oslo", Unit.FAHRENHEIT, 1)
    assert tool.invoke({"city": "Oslo", "days": 3}) == "Oslo: 20 celsius, 3 days"
    assert tool.invoke(ToolCall("call_x", "get_weather", {"city": "Rome"})) == "Rome: 20 celsius, 1 days"

    def route(to: Point, window: Window) -> tuple:
        return to, window

    to, window = tool_from_function(route).invoke({"to": {"lat": 1, "lon": 2}, "window": {"start": 8}})
    assert (to, window) == (Point(1.0, 2.0), Window(start=8, end=24))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "'city' is a required property"),
        ({"city": "Oslo", "unit": "kelvin"}, "at /unit"),
        ({"city": "Oslo", "days": 8}, "at /days"),
        ({"city": "Oslo", "country": "NO"}, "Additional properties"),
        (ToolCall("call_x", "count", {}), "a call of tool 'count' given to tool 'get_weather'"),
    ],
)
def test_invalid_arguments_raise_output_parse_errors(arguments, message):
    with pytest.raises(OutputParseError, match=message):
        tool_from_function(get_weather).build(arguments)


class GetStockPrice(BaseModel):
    """Look up the latest price of a stock.

    Attributes:
        ticker: The ticker symbol.
        exchange: Overridden by the Field.
    """

    ticker: str
    exchange: str = Field("NYSE", description="The exchange.")


class Named(BaseModel):
    __tool_name__ = "custom-name"
    x: int


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


def test_a_pydantic_model_as_a_tool():
    tool = tool_from_model(GetStockPrice)
    assert tool.spec == ToolSpec(
        "get_stock_price",
        "Look up the latest price of a stock.",
        {
            "properties": {
                "ticker": {"type": "string", "description": "The ticker symbol."},
                "exchange": {"default": "NYSE", "description": "The exchange.", "type": "string"},
            },
            "required": ["ticker"],
            "type": "object",
            "additionalProperties": False,
        },
    )
    assert tool.build({"ticker": "ACME"}) == GetStockPrice(ticker="ACME")
    assert (tool_from_model(Named).spec.name, tool_from_model(Named).spec.description) == ("custom-name", "")
    assert [snake_case(n) for n in ("HTTPRequest", "getX", "A1B")] == ["http_request", "get_x", "a1_b"]


def test_a_recursive_model_has_its_root_inlined():
    schema = tool_from_model(Tree).spec.parameters
    assert schema["type"] == "object" and "$ref" not in schema
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Tree"}
    tree = tool_from_model(Tree).build({"value": 1, "children": [{"value": 2}]})
    assert tree.children[0] == Tree(value=2)


def test_tool_from_model_needs_a_model_class():
    with pytest.raises(ToolDefinitionError, match="expects a Pydantic model class"):
        tool_from_model(GetStockPrice(ticker="X"))


def test_as_tool_over_every_kind():
    spec = ToolSpec("count", "Count.", {"type": "object", "properties": {"n": {"type": "integer"}}})
    function_tool, model_tool = as_tool(get_weather), as_tool(GetStockPrice)
    assert isinstance(function_tool, FunctionTool) and isinstance(model_tool, ModelTool)
    assert as_tool(function_tool) is function_tool
    assert isinstance(as_tool(spec), SchemaTool) and as_tool(spec).spec == spec
    from_dict = as_tool(spec.to_openai())
    assert from_dict.spec == spec and from_dict.build({"n": 2}) == {"n": 2}
    with pytest.raises(OutputParseError, match="at /n"):
        from_dict.build({"n": "two"})
    with pytest.raises(ToolDefinitionError, match="cannot make a tool of 42"):
        as_tool(42)
    with pytest.raises(ToolDefinitionError, match="cannot make a tool of"):
        as_tool(Point)


def test_round_trip_from_functions_to_a_grammar_and_back():
    tools = [as_tool(get_weather), as_tool(GetStockPrice)]
    fmt = tool_call_format([t.spec for t in tools], "required")
    resolve_response_format(fmt)  # every schema is prepared strictly for llguidance
    answer = (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city":"Oslo","unit":"fahrenheit"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_stock_price", "arguments": {"ticker":"ACME"}}\n</tool_call>'
    )
    fmt.parse(answer)  # the structural tags read the same answer
    content, calls = parse_tool_calls(answer, [t.spec for t in tools])
    by_name = {t.spec.name: t for t in tools}
    assert content == "Checking."
    assert by_name[calls[0].name].invoke(calls[0]) == "Oslo: 20 fahrenheit, 1 days"
    assert by_name[calls[1].name].build(calls[1]) == GetStockPrice(ticker="ACME")
