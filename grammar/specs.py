"""Response formats (what a user asks for) and GrammarSpec (the regex it compiles to, plus how to
turn the finished text back into a typed value).

A response format is a Pydantic model class or any type a ``TypeAdapter`` accepts, a JSON Schema
dict, ``JsonSchema(...)`` for options, ``JsonObject()`` (any JSON value), ``Regex(pattern)`` or
``Choice([...])``. ``resolve_response_format`` validates it and translates it to a regex; compiling
that regex to a token automaton is the compiler's job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError

from loomlm.grammar.errors import GrammarError, InvalidRegexError, InvalidSchemaError
from loomlm.grammar.json_schema import SchemaOptions, json_value_regex, schema_to_regex
from loomlm.grammar.schema_strings import escape_literal


class OutputParseError(GrammarError):
    """The finished text does not parse or validate as the requested format."""


@dataclass(frozen=True, slots=True)
class Regex:
    """Text that fully matches ``pattern`` (Rust ``regex`` syntax: no lookaround, no backreferences)."""

    pattern: str

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidRegexError("Regex needs a non-empty pattern string")


@dataclass(frozen=True, slots=True)
class Choice:
    """Exactly one of ``options``; ``.parsed`` is the chosen option itself (its ``str()`` is the text)."""

    options: tuple[Any, ...]

    def __init__(self, options: Sequence[Any]) -> None:
        options = tuple(options)
        if not options:
            raise GrammarError("Choice needs at least one option")
        texts = [str(o) for o in options]
        if any(not t for t in texts):
            raise GrammarError("Choice options must have non-empty text")
        if len(set(texts)) != len(texts):
            raise GrammarError(f"Choice options must have distinct text, got {texts}")
        object.__setattr__(self, "options", options)


@dataclass(frozen=True, slots=True)
class JsonObject:
    """Any JSON value, nested at most ``max_depth`` deep (``json_object`` mode). The default of 2
    keeps compilation under a second on a 49k vocabulary; each level multiplies the automaton."""

    max_depth: int = 2
    whitespace: Literal["compact", "pretty"] = "compact"

    def __post_init__(self) -> None:
        if not 0 <= self.max_depth <= 16:
            raise ValueError(f"JsonObject.max_depth must be in [0, 16], got {self.max_depth}")


@dataclass(frozen=True, slots=True)
class JsonSchema:
    """A JSON Schema dict or a type (Pydantic model, TypedDict, dataclass, ``list[int]``...), with
    translation options. ``strict=False`` drops keywords that cannot be enforced while generating
    and validates the finished output against the full schema instead."""

    schema: Any
    strict: bool = True
    whitespace: Literal["compact", "pretty"] = "compact"
    indent: int = 2
    max_recursion_depth: int = 3


RESPONSE_FORMAT_CLASSES = (Regex, Choice, JsonObject, JsonSchema)


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A resolved response format: the regex to enforce and how to read the result back."""

    kind: Literal["json", "regex", "choice"]
    regex: str
    schema: Any = None  # the JSON Schema the output is validated against (json kind)
    python_type: Any = None  # the TypeAdapter target, when the format was a type
    choices: tuple[Any, ...] = ()
    dropped_keywords: tuple[str, ...] = ()  # "keyword at /pointer", for strict=False
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", hashlib.blake2b(self.regex.encode(), digest_size=16).hexdigest())

    @property
    def needs_end_marker(self) -> bool:
        """Whether the regex must be compiled with the end marker (vocabulary.END_MARKER).

        outlines-core 0.2 drops transitions that leave an accepting state for a non-accepting one,
        so a regex whose complete matches can grow through incomplete ones ("12" -> "12.5", "yes" ->
        "yesterday") needs the marker. A JSON object, array or string ends in a delimiter and cannot
        grow once complete; only a bare top-level number can. The marker makes outlines-core's
        construction far slower for large regexes, so it is used only where needed."""
        if self.kind != "json":
            return True
        return _may_be_bare_number(self.schema)

    def parse(self, text: str) -> Any:
        """The typed value of a finished output; raises OutputParseError naming the problem."""
        if self.kind == "regex":
            return text
        if self.kind == "choice":
            for option in self.choices:
                if str(option) == text:
                    return option
            raise OutputParseError(f"{text!r} is none of the choices")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise OutputParseError(f"the output is not valid JSON: {error}") from None
        if self.schema is not None:
            errors = sorted(_validator(self.schema).iter_errors(value), key=lambda e: list(e.absolute_path))
            if errors:
                where = "/" + "/".join(map(str, errors[0].absolute_path))
                raise OutputParseError(f"the output violates the schema at {where}: {errors[0].message}")
        if self.python_type is None:
            return value
        try:
            return TypeAdapter(self.python_type).validate_python(value)
        except ValidationError as error:
            raise OutputParseError(
                f"the output does not validate as {_type_name(self.python_type)}: {error}"
            ) from None


def _may_be_bare_number(schema: Any) -> bool:
    """Conservative: False only when the root schema surely admits no bare number."""
    if not isinstance(schema, dict):
        return schema is not False and schema is not None
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list):
        return bool({"number", "integer"} & set(types))
    if "const" in schema:
        return isinstance(schema["const"], int | float) and not isinstance(schema["const"], bool)
    if "enum" in schema and isinstance(schema["enum"], list):
        return any(isinstance(v, int | float) and not isinstance(v, bool) for v in schema["enum"])
    return True  # no type at the root (any value, a $ref, a combinator): assume it may be


def _validator(schema: Any) -> Draft202012Validator:
    # The draft's own checker: a bare FormatChecker() also carries draft 3's "time" (no offsets).
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _type_name(python_type: Any) -> str:
    return getattr(python_type, "__name__", None) or repr(python_type)


def resolve_response_format(response_format: Any) -> GrammarSpec:
    """Validate a response format and translate it to a GrammarSpec; raises a GrammarError (a
    ValueError) naming the problem for anything that cannot be enforced."""
    fmt = response_format
    if isinstance(fmt, GrammarSpec):
        return fmt
    if isinstance(fmt, Regex):
        # Syntax is checked by the compiler (Rust regex dialect, which Python's re does not parse).
        return GrammarSpec("regex", fmt.pattern)
    if isinstance(fmt, Choice):
        return GrammarSpec(
            "choice", "(" + "|".join(escape_literal(str(o)) for o in fmt.options) + ")", choices=fmt.options
        )
    if isinstance(fmt, JsonObject) or fmt == "json_object":
        fmt = fmt if isinstance(fmt, JsonObject) else JsonObject()
        regex = json_value_regex(fmt.max_depth, SchemaOptions(whitespace=fmt.whitespace))
        return GrammarSpec("json", regex)
    if not isinstance(fmt, JsonSchema):
        fmt = JsonSchema(fmt)
    schema, python_type = _schema_and_type(fmt.schema)
    options = SchemaOptions(
        strict=fmt.strict,
        whitespace=fmt.whitespace,
        indent=fmt.indent,
        max_recursion_depth=fmt.max_recursion_depth,
    )
    translated = schema_to_regex(schema, options)
    dropped = tuple(f"{d.keyword} at {d.pointer or '/'}" for d in translated.dropped)
    return GrammarSpec(
        "json", translated.regex, schema=schema, python_type=python_type, dropped_keywords=dropped
    )


def _schema_and_type(target: Any) -> tuple[Any, Any]:
    if isinstance(target, dict | bool):
        if isinstance(target, dict):
            try:
                Draft202012Validator.check_schema(target)
            except SchemaError as error:
                pointer = "/" + "/".join(map(str, error.absolute_path))
                raise InvalidSchemaError(error.message, pointer) from None
        return target, None
    if isinstance(target, str):
        raise InvalidSchemaError("got a string; pass the schema as a dict (json.loads it first)")
    try:
        schema = TypeAdapter(target).json_schema()
    except (PydanticUserError, TypeError, ValueError) as error:
        raise GrammarError(f"cannot derive a JSON Schema from {_type_name(target)}: {error}") from None
    return schema, target
