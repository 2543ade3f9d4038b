"""schema_to_regex: a feature matrix of keywords alone and nested. Every valid instance's canonical text
is accepted by a real outlines-core automaton (and Python re), every invalid one rejected, and random
walks of the automaton only ever produce documents that jsonschema (with format checks) accepts."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, time

import pytest
from jsonschema import Draft202012Validator
from schema_structure_cases import DEFS, STRUCTURE_CASES
from schema_value_cases import VALUE_CASES

from loomlm.grammar.errors import InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.json_schema import SchemaOptions, json_value_regex, schema_to_regex

MATRIX = VALUE_CASES + STRUCTURE_CASES
IDS = [case[0] for case in MATRIX]
_VALIDATOR_FORMATS = Draft202012Validator.FORMAT_CHECKER


def _check_formats(value: object, schema: object) -> None:
    """date-time/time/uri are not checked by jsonschema here (optional libraries): check them directly."""
    if not isinstance(schema, dict):
        return
    for item, sub in zip(
        value if isinstance(value, list) else [], schema.get("prefixItems", []), strict=False
    ):
        fmt = sub.get("format")
        if fmt == "date-time":
            datetime.fromisoformat(item.replace("Z", "+00:00"))
        elif fmt == "time":
            time.fromisoformat(item.replace("Z", "+00:00"))
        elif fmt == "date":
            date.fromisoformat(item)
        elif fmt == "uri":
            assert ":" in item and " " not in item


@pytest.mark.parametrize(("name", "schema", "valid", "invalid"), MATRIX, ids=IDS)
def test_matrix_accepts_valid_and_rejects_invalid(
    name, schema, valid, invalid, automaton, canonical, schema_key_order
):
    regex = schema_to_regex(schema).regex
    validator = Draft202012Validator(schema, format_checker=_VALIDATOR_FORMATS)
    order = schema_key_order(schema)
    for value in valid:
        assert validator.is_valid(value), value  # the matrix itself is right
        text = canonical(value, order)
        assert automaton.matches(regex, text), text
        assert automaton.python_match(regex, text), text
    for value in invalid:
        assert not validator.is_valid(value), value
        text = canonical(value, order)
        assert not automaton.matches(regex, text), text
        assert not automaton.python_match(regex, text), text


@pytest.mark.parametrize(("name", "schema", "valid", "invalid"), MATRIX, ids=IDS)
def test_matrix_random_walks_only_produce_valid_documents(name, schema, valid, invalid, automaton):
    regex = schema_to_regex(schema).regex
    validator = Draft202012Validator(schema, format_checker=_VALIDATOR_FORMATS)
    rng = random.Random(hash(name) & 0xFFFF)
    for _ in range(25):
        text = automaton.sample(regex, rng)
        value = json.loads(text)
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (text, errors)
        _check_formats(value, schema)


PRETTY_IDS = [
    "object",
    "nested",
    "enum",
    "const object",
    "prefixItems rest",
    "empty schema",
    "ref recursive",
    "dict",
]


@pytest.mark.parametrize("name", PRETTY_IDS)
@pytest.mark.parametrize("indent", [2, 4])
def test_pretty_layout_is_exactly_json_dumps_indent(name, indent, automaton, canonical, schema_key_order):
    _, schema, valid, _ = MATRIX[IDS.index(name)]
    regex = schema_to_regex(schema, SchemaOptions(whitespace="pretty", indent=indent)).regex
    order = schema_key_order(schema)
    for value in valid:
        assert automaton.matches(regex, canonical(value, order, indent=indent))
        if isinstance(value, (dict, list)) and value:
            assert not automaton.matches(regex, canonical(value, order))  # compact is not pretty
            assert not automaton.matches(regex, canonical(value, order, indent=indent + 1))
    rng = random.Random(indent)
    for _ in range(10):
        text = automaton.sample(regex, rng)
        value = json.loads(text)
        assert text == canonical(value, order, indent=indent)


def test_unsatisfiable_schema_is_invalid():
    with pytest.raises(InvalidSchemaError, match="no JSON value"):
        schema_to_regex({"type": "object", "required": ["k"], "additionalProperties": False})
    with pytest.raises(InvalidSchemaError):
        schema_to_regex(False)


@pytest.mark.parametrize(
    "schema",
    [{"type": 5}, {"required": "a"}, {"minLength": -1}, {"$ref": "#/$defs/missing"}, {"properties": []}],
)
def test_malformed_schemas_raise_invalid_schema_error(schema):
    with pytest.raises(InvalidSchemaError):
        schema_to_regex(schema)


@pytest.mark.parametrize("schema", ['{"type": "string"}', None, 3, ["a"]])
def test_only_dict_or_bool_is_a_schema(schema):
    with pytest.raises(InvalidSchemaError):
        schema_to_regex(schema)


REFUSED = [
    ({"not": {"type": "string"}}, "not", "/not"),
    (
        {"type": "object", "properties": {"a": {"if": {"type": "string"}, "then": {"minLength": 1}}}},
        "if",
        "/properties/a/if",
    ),
    ({"type": "array", "uniqueItems": True}, "uniqueItems", "/uniqueItems"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains", "/contains"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties", "/patternProperties"),
    ({"type": "object", "propertyNames": {"maxLength": 2}}, "propertyNames", "/propertyNames"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired", "/dependentRequired"),
    ({"type": "integer", "multipleOf": 3}, "multipleOf", "/multipleOf"),
    ({"type": "string", "pattern": "(?=a)b"}, "pattern", "/pattern"),
    ({"type": "string", "pattern": "(a)\\1"}, "pattern", "/pattern"),
    ({"type": "string", "format": "duration"}, "format", "/format"),
    ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, "oneOf", "/oneOf"),
    ({"$defs": {"a": {"$id": "http://x/a", "type": "string"}}, "$ref": "#/$defs/a"}, "$id", "/$defs/a/$id"),
    ({"$ref": "http://example.com/remote.json"}, "$ref", "/$ref"),
    (
        {"allOf": [{"anyOf": [{"type": "string"}]}], "unevaluatedProperties": False},
        "unevaluatedProperties",
        "/unevaluatedProperties",
    ),
    (
        {"type": "object", "properties": {"a": {}, "b": {}}, "minProperties": 2},
        "minProperties",
        "/minProperties",
    ),
]


@pytest.mark.parametrize(("schema", "keyword", "pointer"), REFUSED)
def test_unenforceable_keywords_are_refused_when_strict(schema, keyword, pointer):
    with pytest.raises(UnsupportedSchemaError) as info:
        schema_to_regex(schema)
    assert (info.value.keyword, info.value.pointer) == (keyword, pointer)
    assert keyword in str(info.value) and "strict=False" in str(info.value)


@pytest.mark.parametrize(("schema", "keyword", "pointer"), REFUSED)
def test_lenient_mode_drops_and_reports_them(schema, keyword, pointer):
    result = schema_to_regex(schema, SchemaOptions(strict=False))
    assert (keyword, pointer) in {(d.keyword, d.pointer) for d in result.dropped}
    assert all(d.reason for d in result.dropped)
    assert schema_to_regex({"type": "integer"}, SchemaOptions(strict=False)).dropped == ()


def test_recursion_is_cut_at_max_recursion_depth(automaton):
    """A linked list of n nodes: the recursive branch is offered max_recursion_depth times."""

    def chain(n: int) -> str:
        node: dict = {"v": n - 1}
        for v in range(n - 2, -1, -1):
            node = {"v": v, "next": node}
        return json.dumps(node, separators=(",", ":"))

    for limit in (0, 2, 3):
        regex = schema_to_regex(
            DEFS | {"$ref": "#/$defs/node"}, SchemaOptions(max_recursion_depth=limit)
        ).regex
        accepted = [n for n in range(1, 7) if automaton.matches(regex, chain(n))]
        assert accepted == list(range(1, limit + 2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"whitespace": "spaces"},
        {"indent": -1},
        {"max_recursion_depth": -1},
        {"strict": "yes"},
        {"indent": True},
    ],
)
def test_options_validate_their_values(kwargs):
    with pytest.raises(ValueError):
        SchemaOptions(**kwargs)


def test_json_value_regex_bounds_depth(automaton):
    assert automaton.matches(json_value_regex(0), "1.5e3")
    assert not automaton.matches(json_value_regex(0), "[]")
    regex = json_value_regex(2)
    assert automaton.matches(regex, '{"a":[1,{"b":null}],"c":"d"}') is False  # three levels
    assert automaton.matches(regex, '{"a":[1,"x"],"c":{}}')
    pretty = json_value_regex(2, SchemaOptions(whitespace="pretty"))
    assert automaton.matches(pretty, json.dumps({"a": [1, "x"], "c": {}}, indent=2))
    with pytest.raises(ValueError):
        json_value_regex(-1)
