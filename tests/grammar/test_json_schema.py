"""schema_to_regex: a feature matrix of keywords alone and nested. Every valid instance's canonical text
is accepted by a real outlines-core automaton (and Python re), every invalid one rejected, and random
walks of the automaton only ever produce documents that jsonschema (with format checks) accepts."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, time

import pytest
from jsonschema import Draft202012Validator

from loomlm.grammar.errors import InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.json_schema import SchemaOptions, json_value_regex, schema_to_regex

DEFS = {
    "$defs": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
            "required": ["x", "y"],
        },
        "a~b/c": {"type": "boolean"},
        "node": {
            "type": "object",
            "properties": {"v": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}},
            "required": ["v"],
            "additionalProperties": False,
        },
    }
}

# (id, schema, valid instances, invalid instances)
MATRIX = [
    ("null", {"type": "null"}, [None], [0, False, "null"]),
    ("boolean", {"type": "boolean"}, [True, False], [0, None]),
    ("integer", {"type": "integer"}, [0, -7, 123456789012345678901234567890], [1.5, "1", True]),
    ("number", {"type": "number"}, [0, -1.25, 3, 1e-5], ["1", None]),
    ("int range", {"type": "integer", "minimum": -3, "exclusiveMaximum": 10}, [-3, 0, 9], [-4, 10, 100]),
    (
        "num range",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1.5},
        [0.001, 1, 1.5],
        [0, -1, 1.51, 2],
    ),
    ("multipleOf 100", {"type": "integer", "multipleOf": 100}, [0, 300, -1200], [50, 1]),
    ("string", {"type": "string"}, ["", 'a"b\\c', "é漢😀", "\n\t\u0001"], [1, None]),
    (
        "string len",
        {"type": "string", "minLength": 2, "maxLength": 3},
        ["ab", "é漢😀", "\n\t"],
        ["a", "abcd", ""],
    ),
    ("nullable", {"type": ["string", "null"], "maxLength": 2}, [None, "ab"], ["abc", 1]),
    (
        "enum",
        {"enum": ["a", 1, None, [1, {"k": "v"}], {"o": True}]},
        ["a", 1, None, [1, {"k": "v"}], {"o": True}],
        ["b", 2, [1], {}],
    ),
    ("const float", {"const": 2.0}, [2], [3, "2"]),
    (
        "const object",
        {"const": {"b": [1, 2], "a": "x"}},
        [{"b": [1, 2], "a": "x"}],
        [{"b": [1, 2]}, {"a": "x"}],
    ),
    ("enum+type filter", {"type": "string", "enum": ["a", 1, "b"], "maxLength": 1}, ["a", "b"], [1, "c"]),
    (
        "object",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
            "required": ["b"],
        },
        [{"b": "x"}, {"a": 1, "b": ""}, {"b": "y", "c": True}, {"a": 1, "b": "x", "c": False}],
        [{}, {"a": 1}, {"b": 1}],
    ),
    (
        "object all optional",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "additionalProperties": False,
        },
        [{}, {"a": 1}, {"b": 2}, {"a": 1, "b": 2}],
        [{"c": 1}, {"a": "x"}],
    ),
    (
        "additionalProperties schema",
        {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "additionalProperties": {"type": "string"},
        },
        [{}, {"id": 1}, {"id": 1, "x": "y", "z": ""}, {"q": "r"}],
        [{"x": 1}, {"id": "s"}],
    ),
    (
        "dict",
        {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
        [{}, {"a": 1}, {"a": 1, "b": 2}],
        [{"a": "x"}, {"a": 1, "b": 2, "c": 3}],
    ),
    (
        "minProperties 1",
        {"type": "object", "additionalProperties": {"type": "boolean"}, "minProperties": 1},
        [{"a": True}],
        [{}],
    ),
    (
        "required only",
        {"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}},
        [{"k": 1}, {"k": 1, "j": 2}],
        [{}, {"k": "x"}],
    ),
    (
        "array",
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        [[1], [1, 2, 3]],
        [[], [1, 2, 3, 4], ["a"]],
    ),
    (
        "prefixItems",
        {
            "type": "array",
            "prefixItems": [{"type": "string"}, {"type": "integer"}],
            "items": False,
            "minItems": 1,
        },
        [["a"], ["a", 1]],
        [[], [1], ["a", 1, 2], ["a", "b"]],
    ),
    (
        "prefixItems rest",
        {"type": "array", "prefixItems": [{"const": "h"}], "items": {"type": "boolean"}},
        [[], ["h"], ["h", True, False]],
        [[True], ["h", 1]],
    ),
    (
        "anyOf",
        {"anyOf": [{"type": "integer", "maximum": 5}, {"type": "string", "maxLength": 1}]},
        [5, -1, "a"],
        [6, "ab", None],
    ),
    ("oneOf disjoint", {"oneOf": [{"type": "integer"}, {"type": "string"}]}, [1, "a"], [None, 1.5]),
    (
        "oneOf discriminated",
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"t": {"const": "cat"}, "m": {"type": "integer"}},
                    "required": ["t", "m"],
                },
                {
                    "type": "object",
                    "properties": {"t": {"const": "dog"}, "b": {"type": "boolean"}},
                    "required": ["t", "b"],
                },
            ]
        },
        [{"t": "cat", "m": 1}, {"t": "dog", "b": True}],
        [{"t": "cat", "b": True}, {"t": "cow", "m": 1}],
    ),
    (
        "allOf",
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"a": {"minimum": 2}, "b": {"type": "string"}}},
            ]
        },
        [{"a": 2}, {"a": 3, "b": "x"}],
        [{"a": 1}, {"b": "x"}, {"a": 2, "b": 1}],
    ),
    (
        "ref",
        {**DEFS, "type": "array", "items": {"$ref": "#/$defs/point"}},
        [[], [{"x": 1, "y": 2}]],
        [[{"x": 1}], [{"x": 1, "y": "2"}]],
    ),
    ("ref escaped", {**DEFS, "$ref": "#/$defs/a~0b~1c"}, [True], [1]),
    ("ref percent", {**DEFS, "$ref": "#/%24defs/point"}, [{"x": 0, "y": 0}], [{}]),
    (
        "ref recursive",
        {**DEFS, "$ref": "#/$defs/node"},
        [{"v": 1}, {"v": 1, "next": {"v": 2, "next": {"v": 3}}}],
        [{"v": 1, "next": {}}, {"next": {"v": 1}}],
    ),
    (
        "ref root",
        {"type": "object", "properties": {"kid": {"$ref": "#"}}, "additionalProperties": False},
        [{}, {"kid": {"kid": {}}}],
        [{"kid": 1}],
    ),
    (
        "nested",
        {
            **DEFS,
            "type": "object",
            "properties": {
                "pts": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "null"}]}}
            },
            "required": ["pts"],
            "additionalProperties": False,
        },
        [{"pts": []}, {"pts": [None, {"x": 1, "y": -1}]}],
        [{"pts": [1]}, {}, {"pts": [{"x": 1}]}],
    ),
    (
        "formats",
        {
            "type": "array",
            "prefixItems": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "time"},
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "uuid"},
                {"type": "string", "format": "ipv4"},
                {"type": "string", "format": "email"},
                {"type": "string", "format": "uri"},
                {"type": "string", "format": "hostname"},
                {"type": "string", "format": "ipv6"},
            ],
            "items": False,
        },
        [
            [
                "2024-02-29",
                "23:59:59.5Z",
                "2000-01-01T00:00:00+01:00",
                "12345678-1234-1234-1234-123456789abc",
                "10.0.0.255",
                "a.b@example.com",
                "https://ex.org/p?q=1#f",
                "host.example",
                "1:2:3:4:5:6:7:8",
            ]
        ],
        [
            ["2023-02-29"],
            ["2024-13-01"],
            ["2024-01-01", "24:00:00Z"],
            ["2024-01-01", "10:00:00Z", "x"],
            ["2024-01-01", "10:00:00Z", "2000-01-01T00:00:00Z", "1234"],
            [
                "2024-01-01",
                "10:00:00Z",
                "2000-01-01T00:00:00Z",
                "12345678-1234-1234-1234-123456789abc",
                "256.0.0.1",
            ],
        ],
    ),
    (
        "pattern anchored",
        {"type": "string", "pattern": "^[a-z]{2}-\\d+$"},
        ["ab-1", "zz-0042"],
        ["ab-", "Ab-1", "xab-1", "ab-1x"],
    ),
    (
        "pattern unanchored",
        {"type": "string", "pattern": "ab|c(d|e)\\.?"},
        ["ab", "xxce.", "cd", "zabz"],
        ["", "c", "a b"],
    ),
    ("pattern quote", {"type": "string", "pattern": '^"[^"]*"$'}, [], ["a", '"a"x']),
    ("empty schema", {}, [None, 1, "s", [1, {"a": 2}], {"k": [1]}], []),
    ("true", True, [1, {"a": None}], []),
    (
        "unevaluatedProperties false",
        {"type": "object", "properties": {"a": {"type": "null"}}, "unevaluatedProperties": False},
        [{}, {"a": None}],
        [{"b": 1}],
    ),
    (
        "annotations",
        {
            "title": "T",
            "description": "d",
            "default": 1,
            "examples": [1],
            "$comment": "c",
            "deprecated": True,
            "type": "integer",
            "readOnly": True,
            "format": "my-own-format",
        },
        [1],
        ["x"],
    ),
]
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
