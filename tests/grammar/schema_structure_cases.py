"""Schema cases on structure: objects, arrays, combinators, references (escaped, percent-encoded,
recursive, to the root) and their nesting; the empty and ``true`` schemas. Each case: (id, schema,
valid instances, invalid instances)."""

from __future__ import annotations

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

STRUCTURE_CASES = [
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
    ("empty schema", {}, [None, 1, "s", [1, {"a": 2}], {"k": [1]}], []),
    ("true", True, [1, {"a": None}], []),
    (
        "unevaluatedProperties false",
        {"type": "object", "properties": {"a": {"type": "null"}}, "unevaluatedProperties": False},
        [{}, {"a": None}],
        [{"b": 1}],
    ),
]
