"""Schema cases on single values: types, numeric bounds, strings, enum and const, formats, patterns
and annotations. Each case: (id, schema, valid instances, invalid instances)."""

from __future__ import annotations

VALUE_CASES = [
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
