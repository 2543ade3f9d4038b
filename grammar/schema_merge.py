"""Exact merging of two schema objects for ``allOf`` (and ``$ref`` with sibling keywords).

A merged schema accepts exactly the instances both inputs accept. Sub-schemas are not merged eagerly:
they become ``{"allOf": [a, b]}`` and are merged when translated. A keyword whose two values cannot be
combined exactly (two different ``pattern``s ...) is handed to ``on_conflict``, which refuses it or (non
strict) records it as dropped; the first value is then kept. Keyword origins (JSON pointers, for error
messages) travel in the private ``ORIGINS`` entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction

from loomlm.grammar.schema_layout import normalize_value

ORIGINS = "$$origins"  # private: keyword -> JSON pointer of the schema object it came from
ANY_OF_GROUPS = "$$anyOf"  # private: list of (keyword, branches, pointer) still to distribute

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$schema",
        "$defs",
        "definitions",
        "contentMediaType",
        "$anchor",
        "$vocabulary",
        "discriminator",
    }
)
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")

OnConflict = Callable[[str, str, str], None]


def value_key(value: object) -> str:
    """Equality key of a JSON value in JSON Schema's sense (1 == 1.0, true != 1, key order irrelevant)."""
    return json.dumps(normalize_value(value), sort_keys=True)


def type_set(schema: dict) -> set[str]:
    declared = schema.get("type", list(_TYPES))
    types = {declared} if isinstance(declared, str) else set(declared)
    if "number" in types:
        types.add("integer")
    return types


def both(a: object, b: object) -> object:
    if a is True:
        return b
    if b is True:
        return a
    return {"allOf": [a, b]}


def merge(a: dict, b: dict, on_conflict: OnConflict) -> dict:
    """The schema object accepting exactly what ``a`` and ``b`` both accept (see module docstring)."""
    out = {k: v for k, v in a.items() if k not in ANNOTATIONS}
    origins = {**b.get(ORIGINS, {}), **a.get(ORIGINS, {})}
    out[ORIGINS] = origins
    for key, value in b.items():
        if key in ANNOTATIONS or key == ORIGINS:
            continue
        if key not in out:
            out[key] = value
            continue
        mine = out[key]
        if key == "type":
            out[key] = sorted(type_set(a) & type_set(b))
        elif key in ("enum", "const"):
            pass  # handled below with both of them together
        elif key in _LOWER_BOUNDS:
            out[key] = max(mine, value)
        elif key in _UPPER_BOUNDS:
            out[key] = min(mine, value)
        elif key == "required":
            out[key] = list(dict.fromkeys([*mine, *value]))
        elif key == "uniqueItems":
            out[key] = bool(mine) or bool(value)
        elif key == ANY_OF_GROUPS:
            out[key] = [*mine, *value]
        elif key == "multipleOf":
            out[key] = _merge_multiple_of(mine, value, origins, on_conflict)
        elif key in ("properties", "additionalProperties", "prefixItems", "items"):
            pass  # handled below, they depend on each other
        elif value_key(mine) != value_key(value):
            on_conflict(key, origins.get(key, ""), f"allOf combines two different {key!r} values")
    _merge_values(a, b, out)
    _merge_properties(a, b, out)
    _merge_items(a, b, out)
    return out


def _merge_multiple_of(mine: object, value: object, origins: dict, on_conflict: OnConflict) -> object:
    x, y = Fraction(str(mine)), Fraction(str(value))
    if (x / y).denominator == 1:
        return mine
    if (y / x).denominator == 1:
        return value
    on_conflict("multipleOf", origins.get("multipleOf", ""), "allOf combines unrelated multipleOf values")
    return mine


def _merge_values(a: dict, b: dict, out: dict) -> None:
    sets = []
    for schema in (a, b):
        if "const" in schema:
            sets.append([schema["const"]])
        if "enum" in schema:
            sets.append(list(schema["enum"]))
    if not sets:
        return
    values = sets[0]
    for other in sets[1:]:
        keys = {value_key(v) for v in other}
        values = [v for v in values if value_key(v) in keys]
    out.pop("const", None)
    out["enum"] = values


def _merge_properties(a: dict, b: dict, out: dict) -> None:
    props_a, props_b = a.get("properties", {}), b.get("properties", {})
    if not props_a and not props_b and "additionalProperties" not in b:
        return
    extra_a, extra_b = a.get("additionalProperties", True), b.get("additionalProperties", True)
    merged = {}
    for name in dict.fromkeys([*props_a, *props_b]):
        merged[name] = both(props_a.get(name, extra_a), props_b.get(name, extra_b))
    if merged:
        out["properties"] = merged
    if "additionalProperties" in a or "additionalProperties" in b:
        out["additionalProperties"] = both(extra_a, extra_b)


def _merge_items(a: dict, b: dict, out: dict) -> None:
    prefix_a, prefix_b = a.get("prefixItems", []), b.get("prefixItems", [])
    if not prefix_a and not prefix_b and "items" not in b:
        return
    rest_a, rest_b = a.get("items", True), b.get("items", True)
    merged = []
    for index in range(max(len(prefix_a), len(prefix_b))):
        left = prefix_a[index] if index < len(prefix_a) else rest_a
        right = prefix_b[index] if index < len(prefix_b) else rest_b
        merged.append(both(left, right))
    if merged:
        out["prefixItems"] = merged
    if "items" in a or "items" in b:
        out["items"] = both(rest_a, rest_b)
