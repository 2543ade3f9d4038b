"""What the structured-output engine tests share: a feature matrix of every keyword the translator
enforces (bounded so a random model finishes inside max_tokens), running requests to completion, and
validation with format checks."""

from __future__ import annotations

from jsonschema import Draft202012Validator

SHORT = {"type": "string", "maxLength": 6}
SMALL_INT = {"type": "integer", "minimum": -20, "maximum": 300}

# Every keyword the translator enforces, alone and nested. Strings and arrays are bounded so that a
# random model finishes well inside max_tokens (schemas for extra keys, whose names are unbounded
# strings, and email/uri formats, whose parts are unbounded, are sampled in tests/grammar instead).
FEATURE_MATRIX = {
    "types": {
        "type": "array",
        "maxItems": 4,
        "items": {"type": ["string", "integer", "boolean", "null"], "maxLength": 4},
    },
    "object_required_optional": {
        "type": "object",
        "properties": {"a": SHORT, "b": SMALL_INT, "c": {"type": "boolean"}},
        "required": ["b"],
        "additionalProperties": False,
    },
    "enum_const": {
        "type": "object",
        "properties": {"kind": {"enum": ["cat", "dog", 3, None]}, "v": {"const": {"x": [1, 2]}}},
        "required": ["kind", "v"],
        "additionalProperties": False,
    },
    "any_of_nullable": {"anyOf": [SHORT, SMALL_INT, {"type": "null"}]},
    "one_of_disjoint": {"oneOf": [{"type": "boolean"}, {"type": "array", "maxItems": 2, "items": SMALL_INT}]},
    "all_of_merge": {
        "allOf": [
            {"type": "object", "properties": {"a": SMALL_INT}, "required": ["a"]},
            {"properties": {"a": True, "b": SHORT}, "required": ["b"], "additionalProperties": False},
        ]
    },
    "refs_and_recursion": {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "v": SMALL_INT,
                    "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
                },
                "required": ["v", "next"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/node",
    },
    "arrays": {
        "type": "array",
        "prefixItems": [{"type": "boolean"}, SMALL_INT],
        "items": SHORT,
        "minItems": 2,
        "maxItems": 4,
    },
    "string_lengths_and_pattern": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "word": {"type": "string", "minLength": 2, "maxLength": 5},
        },
        "required": ["code", "word"],
        "additionalProperties": False,
    },
    "formats": {
        "type": "object",
        "properties": {
            fmt: {"type": "string", "format": fmt} for fmt in ("date", "time", "date-time", "uuid", "ipv4")
        },
        "required": ["date", "time", "date-time", "uuid", "ipv4"],
        "additionalProperties": False,
    },
    "integer_bounds": {
        "type": "array",
        "maxItems": 4,
        "items": {"type": "integer", "exclusiveMinimum": -105, "maximum": 2048},
    },
    "number_bounds": {
        "type": "array",
        "maxItems": 3,
        "items": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 10},
    },
    "nested": {
        "type": "object",
        "properties": {
            "people": {
                "type": "array",
                "maxItems": 2,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": SHORT,
                        "tags": {"type": "array", "maxItems": 2, "items": {"enum": ["x", "y"]}},
                    },
                    "required": ["name", "tags"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["people"],
        "additionalProperties": False,
    },
}


def validates(schema, value) -> bool:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).is_valid(value)
