"""Response formats (what a user asks for) and GrammarSpec (what is to be enforced, in its source
form, plus how to turn the finished text back into a typed value).

A response format is a Pydantic model class or any type a ``TypeAdapter`` accepts, a JSON Schema
dict, ``JsonSchema(...)`` for options, ``JsonObject()`` (any JSON value), ``Regex(pattern)``,
``Choice([...])`` or ``Grammar(text)`` (a Lark or GBNF context-free grammar).
``resolve_response_format`` validates it into a GrammarSpec; a grammar backend
(``grammar/backends``) prepares and compiles that for its own automaton."""

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
from loomlm.grammar.json_schema import SchemaOptions, check_schema_size
from loomlm.grammar.structural_tags import StructuralTags

# Lark/GBNF grammar text past this size is refused at once (JSON Schemas are bounded by
# json_schema.check_schema_size: node count and depth).
MAX_GRAMMAR_CHARS = 1 << 20


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
        if not 0 <= self.max_depth <= 8:
            raise ValueError(f"JsonObject.max_depth must be in [0, 8], got {self.max_depth}")


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


@dataclass(frozen=True, slots=True)
class Grammar:
    """A context-free grammar: Lark syntax as llguidance reads it (``start: ...``; terminals may be
    regexes, ``%json {...}`` embeds a JSON Schema), or llama.cpp's GBNF with ``syntax="gbnf"``
    (translated to Lark). Needs the llguidance grammar backend."""

    text: str
    syntax: Literal["lark", "gbnf"] = "lark"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise GrammarError("Grammar needs a non-empty grammar text")
        if len(self.text) > MAX_GRAMMAR_CHARS:
            raise GrammarError(f"the grammar has {len(self.text)} characters, over {MAX_GRAMMAR_CHARS}")
        if self.syntax not in ("lark", "gbnf"):
            raise GrammarError(f"Grammar syntax must be 'lark' or 'gbnf', got {self.syntax!r}")


RESPONSE_FORMAT_CLASSES = (Regex, Choice, JsonObject, JsonSchema, Grammar, StructuralTags)


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A resolved response format, in source form: what a backend must enforce and how to read the
    result back. ``kind`` says which fields hold the source:

    - ``json``: ``schema`` (None: any JSON value nested at most ``max_depth``), translation
      ``options`` (strictness, whitespace, recursion depth);
    - ``regex``: ``pattern``; ``choice``: ``choices``; ``grammar``: ``grammar`` (Lark text)."""

    kind: Literal["json", "regex", "choice", "grammar"]
    schema: Any = None  # the JSON Schema the output is validated against (json kind)
    python_type: Any = None  # the TypeAdapter target, when the format was a type
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    grammar: str | None = None
    options: SchemaOptions = field(default_factory=SchemaOptions)
    max_depth: int = 2  # json kind without a schema: JsonObject's nesting bound
    structural: StructuralTags | None = None  # grammar kind from StructuralTags: parses the tags
    key: str = field(init=False)

    def __post_init__(self) -> None:
        source = (self.kind, self.schema, [str(c) for c in self.choices], self.pattern, self.grammar)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps(source, sort_keys=True, default=str).encode())
        digest.update(repr((self.options, self.max_depth)).encode())
        object.__setattr__(self, "key", digest.hexdigest())

    @property
    def may_be_bare_number(self) -> bool:
        """Conservative: False only when the output surely is no bare JSON number (a number can
        grow past a complete prefix: "1" -> "12"; objects, arrays, strings end in a delimiter)."""
        return self.kind == "json" and _may_be_bare_number(self.schema)

    def parse(self, text: str) -> Any:
        """The typed value of a finished output; raises OutputParseError naming the problem."""
        if self.kind == "regex":
            return text
        if self.kind == "grammar":
            return self.structural.parse(text) if self.structural is not None else text
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
    if schema is None:
        return True  # any JSON value
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
    """Validate a response format into a GrammarSpec; raises a GrammarError (a RequestError)
    naming the problem. Cheap and bounded: translation and compilation are the backend's."""
    fmt = response_format
    if isinstance(fmt, GrammarSpec):
        return fmt
    if isinstance(fmt, Regex):
        # Syntax is checked by the backend (Rust regex dialect, which Python's re does not parse).
        return GrammarSpec("regex", pattern=fmt.pattern)
    if isinstance(fmt, Choice):
        return GrammarSpec("choice", choices=fmt.options)
    if isinstance(fmt, StructuralTags):
        return GrammarSpec("grammar", grammar=fmt.to_lark(), structural=fmt)
    if isinstance(fmt, Grammar):
        text = fmt.text
        if fmt.syntax == "gbnf":
            text = _gbnf_to_lark(text)
        return GrammarSpec("grammar", grammar=text)
    if isinstance(fmt, JsonObject) or fmt == "json_object":
        fmt = fmt if isinstance(fmt, JsonObject) else JsonObject()
        return GrammarSpec("json", options=SchemaOptions(whitespace=fmt.whitespace), max_depth=fmt.max_depth)
    if not isinstance(fmt, JsonSchema):
        fmt = JsonSchema(fmt)
    schema, python_type = _schema_and_type(fmt.schema)
    options = SchemaOptions(
        strict=fmt.strict,
        whitespace=fmt.whitespace,
        indent=fmt.indent,
        max_recursion_depth=fmt.max_recursion_depth,
    )
    return GrammarSpec("json", schema=schema, python_type=python_type, options=options)


def _gbnf_to_lark(text: str) -> str:
    from llguidance.gbnf_to_lark import gbnf_to_lark

    try:
        return gbnf_to_lark(text)
    except Exception as error:  # the converter raises plain exceptions on bad GBNF
        raise GrammarError(f"the GBNF grammar does not parse: {error}") from None


def _schema_and_type(target: Any) -> tuple[Any, Any]:
    if isinstance(target, dict | bool):
        if isinstance(target, dict):
            check_schema_size(target)  # bounded and iterative: before anything recursive reads it
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
