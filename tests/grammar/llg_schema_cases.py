"""Schemas the llguidance preparation is checked on: keywords it refuses under strict (with the keyword
and JSON Pointer named), and keywords it enforces (an instance that satisfies each, one that violates
exactly that keyword)."""

from __future__ import annotations

OVERLAP = [{"type": "integer"}, {"minimum": 1}]  # 2 satisfies both branches

REFUSED = [
    # keywords llguidance refuses or ignores, found by our walk
    ({"not": {"type": "null"}}, "not", "/not"),
    ({"properties": {"a": {"uniqueItems": True}}}, "uniqueItems", "/properties/a/uniqueItems"),
    ({"properties": {"a/b~": {"items": {"contains": {}}}}}, "contains", "/properties/a~1b~0/items/contains"),
    (
        {"$defs": {"x": {"propertyNames": {"maxLength": 2}}}, "$ref": "#/$defs/x"},
        "propertyNames",
        "/$defs/x/propertyNames",
    ),
    (
        {"anyOf": [{"type": "string"}, {"if": {"type": "integer"}, "then": {"minimum": 1}}]},
        "if",
        "/anyOf/1/if",
    ),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired", "/dependentRequired"),
    ({"dependentSchemas": {"a": {"required": ["b"]}}}, "dependentSchemas", "/dependentSchemas"),
    (
        {"prefixItems": [{"$dynamicRef": "#/$defs/x"}], "$defs": {"x": {}}},
        "$dynamicRef",
        "/prefixItems/0/$dynamicRef",
    ),
    (
        {"allOf": [{"properties": {"a": {}}}], "unevaluatedProperties": False},
        "unevaluatedProperties",
        "/unevaluatedProperties",
    ),
    ({"type": "string", "format": "uri-reference"}, "format", "/format"),
    # enforced only approximately by llguidance
    ({"properties": {"d": {"type": "string", "format": "date"}}}, "format", "/properties/d/format"),
    ({"items": {"format": "date-time"}}, "format", "/items/format"),
    ({"type": "number", "multipleOf": 0.1}, "multipleOf", "/multipleOf"),
    ({"const": 2**53 + 1}, "const", "/const"),
    ({"type": "integer", "maximum": 2**60 + 1}, "maximum", "/maximum"),
    ({"enum": ["a", "nul\x00"]}, "enum", "/enum"),
    ({"type": "string", "pattern": "^\\D+$"}, "pattern", "/pattern"),
    ({"type": "string", "pattern": "^[^\\s]$"}, "pattern", "/pattern"),
    ({"type": "string", "pattern": "^a\\x01$"}, "pattern", "/pattern"),
    ({"patternProperties": {"^\\W": {}}}, "patternProperties", "/patternProperties/^\\W"),
    # refused by llguidance while compiling, located by recompiling
    ({"properties": {"x": {"oneOf": OVERLAP}}}, "oneOf", "/properties/x/oneOf"),
    (
        {"properties": {"ok": {"oneOf": [{"type": "null"}, {"type": "string"}]}, "x": {"oneOf": OVERLAP}}},
        "oneOf",
        "/properties/x/oneOf",
    ),
    ({"properties": {"s": {"type": "string", "pattern": "^(?=a)"}}}, "pattern", "/properties/s/pattern"),
    ({"items": {"type": "string", "pattern": "(a)\\1"}}, "pattern", "/items/pattern"),
    ({"type": "object", "properties": {"a": {}}, "minProperties": 1}, "minProperties", "/minProperties"),
    ({"properties": {"r": {"$ref": "https://example.com/schema.json"}}}, "$ref", "/properties/r/$ref"),
    ({"patternProperties": {"^a": {}, "^ab": {}}}, "patternProperties", "/patternProperties/^a"),
]


# (schema, an instance that satisfies it, one that violates exactly the keyword under test)
ENFORCED = [
    ({"type": "integer"}, 3, 3.5),
    ({"type": ["string", "null"]}, None, 1),
    ({"enum": ["a", 1, [True]]}, [True], [False]),
    ({"const": {"k": [1, "x"]}}, {"k": [1, "x"]}, {"k": [1, "y"]}),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, {"a": "x"}, {"a": 1}),
    ({"type": "object", "properties": {"a": {}}, "required": ["a"]}, {"a": 1}, {}),
    ({"type": "object", "properties": {"a": {}}, "additionalProperties": False}, {"a": 1}, {"a": 1, "b": 2}),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"b": 2}, {"b": "2"}),
    ({"type": "object", "patternProperties": {"^x": {"type": "integer"}}}, {"x1": 1, "y": "s"}, {"x1": "s"}),
    ({"type": "object", "minProperties": 2}, {"a": 1, "b": 2}, {"a": 1}),
    ({"type": "object", "maxProperties": 1}, {"a": 1}, {"a": 1, "b": 2}),
    ({"type": "array", "items": {"type": "integer"}}, [1, 2], [1, "2"]),
    ({"type": "array", "prefixItems": [{"type": "string"}], "items": False}, ["a"], ["a", "b"]),
    ({"type": "array", "minItems": 2}, [1, 2], [1]),
    ({"type": "array", "maxItems": 2}, [1, 2], [1, 2, 3]),
    ({"type": "string", "minLength": 2}, "ab", "a"),
    ({"type": "string", "maxLength": 2.0}, "é😀", "abc"),
    ({"type": "string", "pattern": "^[a-c]+\\d$"}, "abc1", "abd1"),
    ({"type": "string", "pattern": "b"}, "abc", "ac"),
    ({"type": "string", "format": "email"}, "a.b@example.com", "a@@b"),
    ({"type": "string", "format": "uuid"}, "123e4567-e89b-12d3-a456-426614174000", "123e4567"),
    ({"type": "string", "format": "ipv4"}, "192.168.0.1", "256.1.1.1"),
    ({"type": "string", "format": "hostname"}, "example.com", ".".join(["a" * 63] * 5)),  # > 253 chars
    ({"type": "number", "minimum": 1.5}, 1.5, 1.25),
    ({"type": "number", "exclusiveMaximum": 10}, 9.99, 10),
    ({"type": "integer", "exclusiveMinimum": 0, "maximum": 9}, 9, 0),
    ({"type": "integer", "multipleOf": 7}, -14, 15),
    ({"type": "number", "multipleOf": 0.25}, 0.75, 0.8),
    ({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 5}]}, 5, 4),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "s", None),
    ({"allOf": [{"type": "integer"}, {"maximum": 3}]}, 3, 4),
    ({"$defs": {"pos": {"type": "integer", "minimum": 1}}, "items": {"$ref": "#/$defs/pos"}}, [1], [0]),
    ({"$defs": {"a": {"$anchor": "n", "type": "null"}}, "$ref": "#n"}, None, 0),
    ({"$defs": {"a": {"$dynamicAnchor": "n", "type": "null"}}, "$ref": "#n"}, None, 0),
    (
        {
            "type": "object",
            "properties": {"v": {"type": "integer"}, "next": {"$ref": "#"}},
            "additionalProperties": False,
        },
        {"v": 1, "next": {"v": 2, "next": {"v": 3}}},
        {"v": 1, "next": {"v": 2, "next": {"v": "3"}}},
    ),
    (
        {"title": "t", "description": "d", "default": 1, "examples": [1], "$comment": "c", "type": "boolean"},
        True,
        1,
    ),
    ({"deprecated": True, "readOnly": True, "writeOnly": False, "type": "null"}, None, False),
]
