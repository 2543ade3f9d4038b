"""Public entry of the JSON Schema (draft 2020-12) -> regex translation.

The regex is meant for ``outlines_core.Index`` (Rust regex-automata dialect; the syntax is kept to what
Python ``re`` reads identically). Promise: every string the regex matches is a JSON document satisfying
the schema; every keyword accepted is enforced, a keyword that cannot be is refused with
``UnsupportedSchemaError`` (or, ``strict=False``, dropped and reported so the caller validates after
generation). Documented sound restrictions (the regex allows a subset of the valid documents):

- ``format`` is asserted (date, time, date-time, email, hostname, ipv4, ipv6 full form, uuid, uri) with a
  conservative syntax; formats JSON Schema does not define are ignored as annotations.
- an object with ``properties`` and no ``additionalProperties`` gets no extra keys; extra keys (when
  allowed) come after the declared ones and are spelled without escape sequences, so they can be kept
  distinct from the declared names.
- "any value" (``{}``, ``true``, missing ``items``) nests containers at most ``ANY_VALUE_DEPTH`` deep.
- recursive ``$ref`` is unrolled ``max_recursion_depth`` times, then the recursive branch is not offered.
- numbers are written without exponent when bounded; integers never as ``1.0``; ``\\uXXXX`` escapes
  never encode surrogates (characters beyond the BMP are written raw).
- ``oneOf`` is translated as ``anyOf`` when its branches are provably disjoint (types, enum/const values,
  a required property with disjoint values: discriminated unions); otherwise it is refused.
"""

from __future__ import annotations

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from loomlm.grammar.errors import GrammarCompileError, InvalidSchemaError
from loomlm.grammar.schema_budget import TranslationBudget
from loomlm.grammar.schema_layout import Layout, any_value_regex
from loomlm.grammar.schema_limits import check_schema_limits
from loomlm.grammar.schema_options import DroppedKeyword, SchemaOptions, SchemaRegex
from loomlm.grammar.schema_translator import SchemaTranslator

DEFAULT_OPTIONS = SchemaOptions()  # frozen, so sharing one default is safe

__all__ = [
    "DroppedKeyword",
    "SchemaOptions",
    "SchemaRegex",
    "check_schema_size",
    "json_value_regex",
    "schema_to_regex",
]


def _layout(options: SchemaOptions) -> Layout:
    return Layout(pretty=options.whitespace == "pretty", indent=options.indent)


def schema_to_regex(schema: dict | bool, options: SchemaOptions = DEFAULT_OPTIONS) -> SchemaRegex:
    """Translate a draft 2020-12 JSON Schema (a dict or a bool, not JSON text) into a regex.

    Raises ``InvalidSchemaError`` for a malformed schema (checked against the 2020-12 meta-schema,
    dangling ``$ref`` ...), ``UnsupportedSchemaError`` (strict) for a keyword that cannot be enforced,
    ``GrammarTooLargeError`` (a ``GrammarCompileError``) for a schema past ``options.max_schema_nodes`` or
    nested too deep (before anything else reads it) or whose regex would pass ``options.max_regex_len``
    (checked as the regex grows, before the memory is spent).
    """
    if not isinstance(options, SchemaOptions):
        raise TypeError(f"options must be a SchemaOptions, got {type(options).__name__}")
    if not isinstance(schema, (dict, bool)):
        raise InvalidSchemaError(f"a schema must be a dict or a bool, got {type(schema).__name__}")
    check_schema_size(schema, options)
    try:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            pointer = "".join(f"/{token}" for token in exc.path)
            raise InvalidSchemaError(exc.message, pointer) from None
        except OverflowError as exc:  # Python's re, reading a pattern's repetition count
            raise InvalidSchemaError(f"a pattern cannot be read by Python's re: {exc}") from None
        translator = SchemaTranslator(schema, options)
        regex = translator.translate(schema, "", _layout(options))
    except RecursionError:  # a backstop: schema_limits and schema_budget keep well inside the stack
        raise GrammarCompileError(
            "the JSON Schema nests too deeply to translate (Python's recursion limit was reached); flatten "
            "the schema (use $defs and $ref), lower max_recursion_depth or use the llguidance backend"
        ) from None
    if regex is None:
        raise InvalidSchemaError("no JSON value satisfies this schema")
    return SchemaRegex(regex=str(regex), dropped=translator.dropped)


def check_schema_size(schema: object, options: SchemaOptions = DEFAULT_OPTIONS) -> None:
    """Refuse (``GrammarTooLargeError``) a schema document with more than ``options.max_schema_nodes``
    nodes, nested deeper than ``schema_limits.MAX_SCHEMA_DEPTH`` or with a too deeply nested pattern.
    Iterative and cheap: call it before anything recursive (``check_schema``, ``json.dumps``) reads
    a schema from a user."""
    check_schema_limits(schema, options.max_schema_nodes)


def json_value_regex(max_depth: int = 4, options: SchemaOptions = DEFAULT_OPTIONS) -> str:
    """Any JSON value whose arrays/objects nest at most ``max_depth`` deep (0 = scalars only)."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 0 <= max_depth <= 8:
        raise ValueError(
            f"max_depth must be an int in [0, 8] (the regex grows 4x per level), got {max_depth!r}"
        )
    budget = TranslationBudget(options.max_regex_len, "lower max_depth (each level holds 4 of the one below)")
    return any_value_regex(_layout(options), max_depth, budget.check)
