"""Python objects as tools: a typed function or a Pydantic model becomes a ``ToolSpec`` (the data
``loomlm.grammar.tool_specs`` turns into a call grammar) plus the means to validate a call's
arguments into typed values and run the function.

``tool_from_function(fn)`` reads the signature (every parameter annotated; a default makes it
optional), ``Annotated[x, Field(description=...)]`` or ``Annotated[x, "doc"]`` and the docstring (the
summary paragraph is the tool's description; Google ``Args:`` and reST ``:param x:`` entries describe
the arguments), builds a Pydantic model of the arguments with ``create_model`` and takes the JSON
Schema from it (titles stripped, ``additionalProperties: false`` at the top)."""

from __future__ import annotations

import copy
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from loomlm.grammar.specs import OutputParseError
from loomlm.grammar.tool_specs import ToolCall, ToolDefinitionError, ToolSpec, check_tool_name

_ARGS_SECTION = re.compile(r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Attributes):")
_ANY_SECTION = re.compile(r"[A-Z][A-Za-z ]*:")  # Returns:, Raises:, Example: ...
_GOOGLE_ENTRY = re.compile(r"\**(\w+)\s*(?:\([^)]*\))?\s*:(.*)")
_REST_PARAM = re.compile(r":(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?(\w+)\s*:(.*)")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(summary paragraph, {argument: description}) of a Google-style (``Args:``) or reST
    (``:param x:``) docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _ANY_SECTION.fullmatch(line.strip()) or line.lstrip().startswith(":"):
            break
        summary.append(line.strip())
    described: dict[str, list[str]] = {}
    current: list[str] | None = None
    section_indent: int | None = None  # inside an Args: section: the indent of its header
    entry_indent: int | None = None
    for line in lines:
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if not text:
            continue
        rest = _REST_PARAM.fullmatch(text)
        if rest:
            current, section_indent, entry_indent = described.setdefault(rest[1], []), None, indent
            current.append(rest[2].strip())
        elif text.startswith(":"):
            current = None
        elif _ARGS_SECTION.fullmatch(text):
            section_indent, entry_indent, current = indent, None, None
        elif section_indent is not None and indent <= section_indent:
            section_indent = current = None
        elif section_indent is not None and (entry_indent is None or indent == entry_indent):
            entry = _GOOGLE_ENTRY.fullmatch(text)
            entry_indent = indent
            current = described.setdefault(entry[1], []) if entry else None
            if entry:
                current.append(entry[2].strip())
        elif current is not None and entry_indent is not None and indent > entry_indent:
            current.append(text)
    docs = {name: " ".join(p for p in parts if p) for name, parts in described.items()}
    return " ".join(summary), {name: text for name, text in docs.items() if text}


def _annotation_description(annotation: Any) -> tuple[Any, str | None, bool]:
    """(annotation without string metadata, the string doc, whether a Field already describes it)."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, None, False
    metadata = annotation.__metadata__
    has_field = any(isinstance(m, FieldInfo) and m.description for m in metadata)
    docs = [m for m in metadata if isinstance(m, str)]
    kept = [m for m in metadata if not isinstance(m, str)]
    base = annotation.__origin__
    return (Annotated[(base, *kept)] if kept else base), (docs[0] if docs else None), has_field


def strip_titles(schema: Any) -> Any:
    """The schema without Pydantic's ``title`` keywords (property names called "title" are kept)."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: strip_titles(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [strip_titles(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            value = strip_titles(value)
        out[key] = value
    return out


def _parameters_schema(model: type[BaseModel], tool: str, docs: Mapping[str, str] | None = None) -> dict:
    try:
        schema = model.model_json_schema()
    except Exception as error:  # pydantic raises several kinds for a type it cannot describe
        raise ToolDefinitionError(f"tool {tool!r}: cannot derive a JSON Schema: {error}") from None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):  # a recursive model: inline its root
        schema = {**copy.deepcopy(schema["$defs"][ref[len("#/$defs/") :]]), "$defs": schema["$defs"]}
    schema = strip_titles(schema)
    schema.pop("description", None)  # the model's docstring: the tool's description
    schema.setdefault("additionalProperties", False)
    for name, prop in schema.get("properties", {}).items():
        if isinstance(prop, dict) and "description" not in prop and docs and docs.get(name):
            prop["description"] = docs[name]
    return schema


def _checked(spec: ToolSpec, arguments: Mapping | ToolCall) -> Mapping:
    """The arguments (of a call of this tool), valid under its full parameters schema."""
    if isinstance(arguments, ToolCall):
        if arguments.name != spec.name:
            raise OutputParseError(f"a call of tool {arguments.name!r} given to tool {spec.name!r}")
        arguments = arguments.arguments
    spec.validate_arguments(arguments)
    return arguments


def _validated(spec: ToolSpec, model: type[BaseModel], arguments: Mapping | ToolCall) -> BaseModel:
    arguments = _checked(spec, arguments)
    try:
        return model.model_validate(arguments)
    except ValidationError as error:
        raise OutputParseError(f"the arguments of tool {spec.name!r} do not validate: {error}") from None


@dataclass(frozen=True)
class FunctionTool:
    """A Python function as a tool: its ``spec``, the ``function`` and the Pydantic ``arguments_model``."""

    spec: ToolSpec
    function: Callable[..., Any]
    arguments_model: type[BaseModel]

    def build(self, arguments: Mapping | ToolCall) -> BaseModel:
        """The call's arguments validated into an ``arguments_model`` instance (OutputParseError if not)."""
        return _validated(self.spec, self.arguments_model, arguments)

    def invoke(self, arguments: Mapping | ToolCall) -> Any:
        """Validate the arguments and call the function with them (typed: models, enums, dataclasses)."""
        built = self.build(arguments)
        return self.function(**{name: getattr(built, name) for name in type(built).model_fields})


@dataclass(frozen=True)
class ModelTool:
    """A Pydantic model as a tool: calling it means filling in an instance of ``model``."""

    spec: ToolSpec
    model: type[BaseModel]

    def build(self, arguments: Mapping | ToolCall) -> BaseModel:
        """The call's arguments validated into a ``model`` instance (OutputParseError if not)."""
        return _validated(self.spec, self.model, arguments)


@dataclass(frozen=True)
class SchemaTool:
    """A tool known only by its ``ToolSpec`` (an OpenAI dict): arguments stay a validated dict."""

    spec: ToolSpec

    def build(self, arguments: Mapping | ToolCall) -> dict:
        """The call's arguments, validated against the parameters schema (OutputParseError if not)."""
        return dict(_checked(self.spec, arguments))


Tool = FunctionTool | ModelTool | SchemaTool


def tool_from_function(
    fn: Callable[..., Any], *, name: str | None = None, description: str | None = None, strict: bool = True
) -> FunctionTool:
    """A typed function as a tool (name: the function's, description: its docstring's summary)."""
    tool = name or getattr(fn, "__name__", None) or repr(fn)
    if not callable(fn) or isinstance(fn, type):
        raise ToolDefinitionError(f"tool {tool!r}: expected a function, got {type(fn).__name__}")
    check_tool_name(tool)
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (TypeError, ValueError, NameError, AttributeError) as error:
        raise ToolDefinitionError(f"tool {tool!r}: cannot read its signature: {error}") from None
    summary, docs = parse_docstring(inspect.getdoc(fn))
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        where = f"tool {tool!r}: parameter {param.name!r}"
        if param.kind is param.VAR_POSITIONAL or param.kind is param.VAR_KEYWORD:
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(f"tool {tool!r}: {stars}{param.name} cannot be a tool argument")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"{where} is positional-only; tool arguments are passed by name")
        if param.name.startswith("_"):
            raise ToolDefinitionError(f"{where} starts with '_', which Pydantic keeps private; rename it")
        if param.name not in hints:
            raise ToolDefinitionError(f"{where} has no type annotation; annotate every parameter")
        annotation, doc, described = _annotation_description(hints[param.name])
        doc = doc or docs.get(param.name)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            annotation,
            Field(default, description=doc) if doc and not described else default,
        )
    config = ConfigDict(extra="forbid", protected_namespaces=())
    try:
        model = create_model(f"{tool}_arguments", __config__=config, **fields)
    except Exception as error:  # pydantic raises several kinds for a field it cannot build
        raise ToolDefinitionError(f"tool {tool!r}: cannot build its arguments model: {error}") from None
    text = summary if description is None else description
    spec = ToolSpec(tool, text, _parameters_schema(model, tool), strict)
    return FunctionTool(spec, fn, model)


def tool_from_model(model: type[BaseModel], *, strict: bool = True) -> ModelTool:
    """A Pydantic model as a tool: name ``__tool_name__`` or the snake_case class name, description
    the class docstring's summary (its ``Attributes:``/``Args:`` entries describe undescribed fields)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ToolDefinitionError(f"tool_from_model expects a Pydantic model class, got {model!r}")
    name = getattr(model, "__tool_name__", None) or snake_case(model.__name__)
    summary, docs = parse_docstring(model.__dict__.get("__doc__"))
    return ModelTool(ToolSpec(name, summary, _parameters_schema(model, name, docs), strict), model)


def snake_case(name: str) -> str:
    """``GetWeather`` -> ``get_weather``, ``HTTPRequest`` -> ``http_request``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def as_tool(obj: Any) -> Tool:
    """A function, a Pydantic model class, an OpenAI tool dict or a ``ToolSpec`` (or a tool, as is)
    as a tool exposing ``.spec`` and ``.build(arguments)``."""
    if isinstance(obj, FunctionTool | ModelTool | SchemaTool):
        return obj
    if isinstance(obj, ToolSpec):
        return SchemaTool(obj)
    if isinstance(obj, Mapping):
        return SchemaTool(ToolSpec.from_openai(obj))
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        return tool_from_model(obj)
    if callable(obj) and not isinstance(obj, type):
        return tool_from_function(obj)
    raise ToolDefinitionError(
        f"cannot make a tool of {obj!r}: pass a function, a Pydantic model class, an OpenAI tool dict "
        "or a ToolSpec"
    )
