"""Tools for function calling, as data: ``ToolSpec`` (an OpenAI-style function definition) and
``ToolCall`` parsing in a call format (``call_formats``: the generic Hermes / Qwen2.5 blocks, or
Llama 3.1's JSON; the grammar and prompt are in ``tool_format``).

``tool_format.tool_call_format(tools, tool_choice, parallel_tool_calls, fmt)`` turns the tools into
``StructuralTags``: free text, and after each call trigger the name of one tool and
arguments under its parameters schema, call counts bounded in the grammar. Each schema goes through
the same exact-or-refused preparation as a response format (``llg_schema``); a tool with
``strict=False`` has the keywords llguidance cannot enforce dropped from its grammar, and its calls
are validated against the full schema by ``parse_tool_calls``. Python introspection (functions,
Pydantic models -> ToolSpec) lives in ``loomlm.tool_functions``."""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from loomlm.grammar.call_formats import HERMES, CallFormat
from loomlm.grammar.errors import GrammarError
from loomlm.grammar.json_schema import check_schema_size
from loomlm.grammar.specs import OutputParseError

CALL_START = HERMES.open_marker
CALL_END = HERMES.close_marker
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_SPACE = re.compile(r"\s*")
_ID_ALPHABET = string.ascii_letters + string.digits
_FORMATS = Draft202012Validator.FORMAT_CHECKER
_TOOL_KEYS = {"type", "function"}
_FUNCTION_KEYS = {"name", "description", "parameters", "strict"}
NAMED_CHOICE = '{"type": "function", "function": {"name": ...}}'
MAX_RELAXATIONS = 64  # keywords dropped from one strict=False tool's grammar


class ToolDefinitionError(GrammarError):
    """A tool, the tool list or ``tool_choice`` is malformed; the message names the tool and problem."""


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: ``parameters`` is a JSON Schema object for its arguments.
    ``strict=False`` drops keywords that cannot be enforced while generating (validated after)."""

    name: str
    description: str
    parameters: dict
    strict: bool = True

    def __post_init__(self) -> None:
        check_tool_name(self.name)
        if not isinstance(self.description, str):
            raise ToolDefinitionError(f"tool {self.name!r}: the description must be a string")
        if not isinstance(self.strict, bool):
            raise ToolDefinitionError(f"tool {self.name!r}: strict must be a bool, got {self.strict!r}")
        _check_parameters(self.name, self.parameters)

    @classmethod
    def from_openai(cls, tool: Mapping[str, Any]) -> ToolSpec:
        """``{"type": "function", "function": {"name", "description", "parameters", "strict"}}`` or
        the bare function dict. Absent parameters: no arguments. Absent strict: True (loomlm's default)."""
        if not isinstance(tool, Mapping):
            raise ToolDefinitionError(f"a tool must be a dict, got {type(tool).__name__}")
        function = tool
        if "type" in tool or "function" in tool:
            if tool.get("type") != "function":
                raise ToolDefinitionError(f"tool type must be 'function', got {tool.get('type')!r}")
            _no_unknown_keys(tool, _TOOL_KEYS, "tool")
            function = tool.get("function")
            if not isinstance(function, Mapping):
                raise ToolDefinitionError("a tool of type 'function' needs a 'function' dict")
        if "name" not in function:
            raise ToolDefinitionError(f"a tool function needs a 'name', got keys {sorted(function)}")
        _no_unknown_keys(function, _FUNCTION_KEYS, f"tool {function['name']!r}")
        parameters = function.get("parameters")
        strict = function.get("strict")
        return cls(
            name=function["name"],
            description=function.get("description") or "",
            parameters=no_parameters() if parameters is None else parameters,
            strict=True if strict is None else strict,
        )

    def to_openai(self) -> dict:
        """The OpenAI tool dict (``from_openai`` of it gives this spec back)."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function | {"strict": self.strict}}

    def validate_arguments(self, arguments: Any) -> None:
        """Raise ``OutputParseError`` unless ``arguments`` is valid under the full parameters schema."""
        validator = Draft202012Validator(self.parameters, format_checker=_FORMATS)
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/" + "/".join(map(str, errors[0].absolute_path))
            raise OutputParseError(
                f"the arguments of tool {self.name!r} violate its schema at {where}: {errors[0].message}"
            )


def check_tool_name(name: Any) -> None:
    """Raise ``ToolDefinitionError`` unless ``name`` follows OpenAI's rule (``^[a-zA-Z0-9_-]{1,64}$``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ToolDefinitionError(f"tool name {name!r} is invalid: use 1 to 64 of a-z, A-Z, 0-9, '_' and '-'")


def no_parameters() -> dict:
    """The parameters schema of a tool that takes no arguments."""
    return {"type": "object", "properties": {}, "additionalProperties": False}


def _no_unknown_keys(mapping: Mapping, allowed: set[str], what: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ToolDefinitionError(f"{what} has unknown keys {unknown}; allowed: {sorted(allowed)}")


def _check_parameters(name: str, parameters: Any) -> None:
    if not isinstance(parameters, dict):
        raise ToolDefinitionError(f"tool {name!r}: parameters must be a JSON Schema dict")
    try:
        check_schema_size(parameters)  # bounded and iterative: before check_schema recurses
        Draft202012Validator.check_schema(parameters)
    except SchemaError as error:
        pointer = "/" + "/".join(map(str, error.absolute_path))
        message = f"tool {name!r}: invalid parameters schema at {pointer}: {error.message}"
        raise ToolDefinitionError(message) from None
    except GrammarError as error:
        raise ToolDefinitionError(f"tool {name!r}: {error}") from error
    kind = parameters.get("type")
    if kind != "object" and not (kind is None and "properties" in parameters):
        raise ToolDefinitionError(
            f"tool {name!r}: parameters must be an object schema (type 'object'), got type {kind!r}"
        )


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: ``id`` (``call_`` + 24 alphanumerics), tool name, decoded arguments."""

    id: str
    name: str
    arguments: dict

    def to_openai(self) -> dict:
        """The OpenAI ``tool_calls`` entry (arguments as a JSON string)."""
        arguments = json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


def new_tool_call_id() -> str:
    """``call_`` and 24 random letters and digits, as OpenAI's ids."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def tool_specs_by_name(tools: Sequence[ToolSpec | Mapping]) -> dict[str, ToolSpec]:
    """Tools by name (OpenAI dicts accepted); duplicate names refused."""
    if isinstance(tools, Mapping | str) or not isinstance(tools, Sequence):
        raise ToolDefinitionError(f"tools must be a list, got {type(tools).__name__}")
    by_name: dict[str, ToolSpec] = {}
    for tool in tools:
        spec = tool if isinstance(tool, ToolSpec) else ToolSpec.from_openai(tool)
        if spec.name in by_name:
            raise ToolDefinitionError(f"two tools are named {spec.name!r}; tool names must be unique")
        by_name[spec.name] = spec
    return by_name


def parse_tool_calls(
    text: str, tools: Sequence[ToolSpec | Mapping], fmt: CallFormat = HERMES
) -> tuple[str, list[ToolCall]]:
    """The content (the text outside the calls, stripped) and each call, in order, in the call
    format ``fmt``. Raises ``OutputParseError`` on a call that is not JSON, not closed, names an
    unknown tool or whose arguments violate the tool's parameters schema."""
    content, calls, _ = _scan(text, tool_specs_by_name(tools), fmt, cut_allowed=False)
    return content, calls


def parse_tool_calls_until_cut(
    text: str, tools: Sequence[ToolSpec | Mapping], fmt: CallFormat = HERMES
) -> tuple[str, list[ToolCall], bool]:
    """``parse_tool_calls`` for a text cut short (``max_tokens``): the content and the complete
    calls before the cut, and whether the text ends inside a call (that call is dropped). A
    complete call that is invalid still raises."""
    return _scan(text, tool_specs_by_name(tools), fmt, cut_allowed=True)


def _scan(
    text: str, by_name: dict[str, ToolSpec], fmt: CallFormat, cut_allowed: bool
) -> tuple[str, list[ToolCall], bool]:
    decoder = json.JSONDecoder()
    content: list[str] = []
    calls: list[ToolCall] = []
    position = 0
    while (start := text.find(fmt.trigger, position)) != -1:
        content.append(text[position:start])
        body = _SPACE.match(text, start + len(fmt.open_marker)).end()
        try:
            value, end = decoder.raw_decode(text, body)
        except json.JSONDecodeError as error:
            if cut_allowed:
                return "".join(content).strip(), calls, True
            raise OutputParseError(f"a {fmt.name} tool call does not hold valid JSON: {error}") from None
        end = _SPACE.match(text, end).end() if fmt.close_marker else end
        if not text.startswith(fmt.close_marker, end):
            if cut_allowed and fmt.close_marker.startswith(text[end:]):  # the text ends in the marker
                return "".join(content).strip(), calls, True
            raise OutputParseError(f"a tool call is not closed by {fmt.close_marker}")
        calls.append(_tool_call(value, by_name, fmt.arguments_key))
        position = end + len(fmt.close_marker)
    tail, cut = text[position:], False
    if cut_allowed:  # a trigger begun at the very end is a call cut short, not text
        begun = next((k for k in range(len(fmt.trigger) - 1, 0, -1) if tail.endswith(fmt.trigger[:k])), 0)
        tail, cut = tail[: len(tail) - begun], begun > 0
    content.append(tail)
    return "".join(content).strip(), calls, cut


def _tool_call(value: Any, by_name: dict[str, ToolSpec], arguments_key: str) -> ToolCall:
    if not isinstance(value, dict) or set(value) != {"name", arguments_key}:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise OutputParseError(f'a tool call must be {{"name": ..., "{arguments_key}": {{...}}}}, got {got}')
    name, arguments = value["name"], value[arguments_key]
    if not isinstance(name, str) or name not in by_name:
        raise OutputParseError(f"the model called an unknown tool {name!r}; tools: {sorted(by_name)}")
    if not isinstance(arguments, dict):
        raise OutputParseError(f"the arguments of tool {name!r} must be a JSON object")
    by_name[name].validate_arguments(arguments)
    return ToolCall(new_tool_call_id(), name, arguments)
