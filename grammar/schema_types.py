"""Per-type regex builders of the schema translator (null ... object) and the oneOf disjointness test.

Each builder reads only the keywords of its own type from a flattened schema (see
``schema_translator``); a keyword it cannot enforce is passed to ``translator.refuse`` and then ignored.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

from loomlm.grammar.regex_ranges import integer_range_regex, number_range_regex
from loomlm.grammar.schema_budget import expanded_size, running_total, sized
from loomlm.grammar.schema_layout import BOOLEAN_REGEX, INTEGER_REGEX, NULL_REGEX, NUMBER_REGEX, Layout
from loomlm.grammar.schema_merge import ANNOTATIONS, ORIGINS, merge, type_set, value_key
from loomlm.grammar.schema_objects import Member, array_regex, object_regex
from loomlm.grammar.schema_pattern import PatternError, translate_pattern
from loomlm.grammar.schema_strings import (
    COUNTED_CHAR,
    FORMATS,
    STRING_REGEX,
    UNSUPPORTED_FORMATS,
    property_name_regex,
    property_name_regex_size,
)

if TYPE_CHECKING:
    from loomlm.grammar.schema_translator import SchemaTranslator

_OBJECT_UNSUPPORTED = ("patternProperties", "propertyNames", "dependentRequired", "dependentSchemas")
_STRING_UNSUPPORTED = ("contentEncoding", "contentSchema")
# Leaf regexes with their sizes (counted repetitions expanded), for the translation budget.
_STRING = sized(STRING_REGEX, expanded_size(STRING_REGEX))
_COUNTED_CHAR = sized(COUNTED_CHAR, expanded_size(COUNTED_CHAR))
_FORMATS = {
    name: (sized(regex, expanded_size(regex)), low, high) for name, (regex, low, high) in FORMATS.items()
}


def _escape_token(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


class TypeBuilders:
    """The regex of one JSON type under a flattened schema's keywords."""

    def __init__(self, translator: SchemaTranslator) -> None:
        self._tr = translator
        self._budget = translator.budget

    def build(self, type_name: str, flat: dict, layout: Layout) -> str | None:
        if type_name == "null":
            return NULL_REGEX
        if type_name == "boolean":
            return BOOLEAN_REGEX
        if type_name in ("integer", "number"):
            regex = self._number(flat, type_name == "integer")
            return None if regex is None else self._budget.leaf(regex)
        if type_name == "string":
            return self._string(flat)
        if type_name == "array":
            return self._array(flat, layout)
        return self._object(flat, layout)

    def _number(self, flat: dict, integer: bool) -> str | None:
        low, low_exclusive = _bound(flat, "minimum", "exclusiveMinimum", max)
        high, high_exclusive = _bound(flat, "maximum", "exclusiveMaximum", min)
        power_of_ten = 0
        if "multipleOf" in flat:
            step = Fraction(str(flat["multipleOf"]))
            digits = len(str(step.numerator)) - 1
            if (
                step.denominator == 1
                and step.numerator == 10**digits
                and (digits == 0 or low is high is None)
            ):
                integer, power_of_ten = True, digits  # multiples of 10^k are integers ending in k zeros
            else:
                self._tr.refuse(
                    "multipleOf",
                    self._tr.keyword_pointer(flat, "multipleOf"),
                    "only 1 or a power of ten without numeric bounds is supported",
                )
        try:
            if power_of_ten:
                return f"(?:0|-?[1-9][0-9]*0{{{power_of_ten}}})"
            if integer:
                if low is None and high is None:
                    return INTEGER_REGEX
                low_int = None if low is None else math.floor(low) + 1 if low_exclusive else math.ceil(low)
                high_int = (
                    None if high is None else math.ceil(high) - 1 if high_exclusive else math.floor(high)
                )
                return integer_range_regex(low_int, high_int)
            if low is None and high is None:
                return NUMBER_REGEX
            return number_range_regex(
                low, high, exclusive_minimum=low_exclusive, exclusive_maximum=high_exclusive
            )
        except ValueError:
            return None  # an empty range: no number satisfies the bounds

    def _string(self, flat: dict) -> str | None:
        for keyword in _STRING_UNSUPPORTED:
            if keyword in flat:
                self._tr.refuse(keyword, self._tr.keyword_pointer(flat, keyword), "content is not enforced")
        min_length, max_length = _count(flat, "minLength", 0), _count(flat, "maxLength", None)
        content = None
        fmt = flat.get("format")
        if fmt in _FORMATS:
            content = _FORMATS[fmt]
        elif fmt in UNSUPPORTED_FORMATS:
            self._tr.refuse(
                "format", self._tr.keyword_pointer(flat, "format"), f"format {fmt!r} is not supported"
            )
        if "pattern" in flat:
            if content is not None:
                self._tr.refuse(
                    "pattern", self._tr.keyword_pointer(flat, "pattern"), "pattern together with format"
                )
            else:
                try:
                    content = translate_pattern(flat["pattern"], self._budget)
                except PatternError as exc:
                    self._tr.refuse("pattern", self._tr.keyword_pointer(flat, "pattern"), str(exc))
        if content is None:
            if max_length is not None and max_length < min_length:
                return None
            if min_length == 0 and max_length is None:
                return _STRING
            return self._budget.concat('"', self._budget.repeat(_COUNTED_CHAR, min_length, max_length), '"')
        regex, low, high = content
        if (max_length is not None and max_length < low) or (high is not None and high < min_length):
            return None
        if min_length > low:
            self._tr.refuse("minLength", self._tr.keyword_pointer(flat, "minLength"), "with pattern/format")
        if max_length is not None and (high is None or high > max_length):
            self._tr.refuse("maxLength", self._tr.keyword_pointer(flat, "maxLength"), "with pattern/format")
        return self._budget.concat('"', regex, '"')

    def _array(self, flat: dict, layout: Layout) -> str | None:
        tr, inner = self._tr, layout.deeper()
        if "contains" in flat:
            tr.refuse("contains", tr.keyword_pointer(flat, "contains"), "contains is not supported")
        min_items, max_items = _count(flat, "minItems", 0), _count(flat, "maxItems", None)
        if flat.get("uniqueItems") and (max_items is None or max_items > 1):
            tr.refuse("uniqueItems", tr.keyword_pointer(flat, "uniqueItems"), "uniqueness is not enforced")
        base = tr.keyword_pointer(flat, "prefixItems")
        prefix, add = [], running_total(self._budget)  # every prefix item appears in the array's regex
        for index, schema in enumerate(flat.get("prefixItems", [])):
            prefix.append(tr.translate(schema, f"{base}/{index}", inner))
            add(prefix[-1])
        rest = tr.translate(flat.get("items", True), tr.keyword_pointer(flat, "items"), inner)
        return array_regex(self._budget, layout, prefix, rest, min_items, max_items)

    def _object(self, flat: dict, layout: Layout) -> str | None:
        tr, inner = self._tr, layout.deeper()
        for keyword in _OBJECT_UNSUPPORTED:
            if keyword in flat:
                tr.refuse(keyword, tr.keyword_pointer(flat, keyword), f"{keyword} is not supported")
        properties, required = flat.get("properties", {}), list(flat.get("required", []))
        base = tr.keyword_pointer(flat, "properties")
        extra_schema = flat.get("additionalProperties")
        members, add = [], running_total(self._budget)  # every member appears in the object's regex
        for name, schema in properties.items():
            value = tr.translate(schema, f"{base}/{_escape_token(name)}", inner)
            members.append(Member(name, value, name in required))
            add(members[-1].value)
        extra_pointer = tr.keyword_pointer(flat, "additionalProperties")
        for name in required:
            if name not in properties:  # a required name that only additionalProperties describes
                schema = True if extra_schema is None else extra_schema
                members.append(Member(name, tr.translate(schema, extra_pointer, inner), True))
                add(members[-1].value)
        names = [m.name for m in members]
        extra = None
        if extra_schema is not None:
            value = tr.translate(extra_schema, extra_pointer, inner)
            extra = None if value is None else (self._key_regex(names), value)
        elif not properties:
            # Sound restriction: with declared properties and no additionalProperties, no extra keys.
            extra = (self._key_regex(names), tr.any_value(inner))
        possible = [m for m in members if m.value is not None]
        all_required = all(m.required for m in possible)
        max_extra, allow_empty = None, True
        max_props, min_props = _count(flat, "maxProperties", None), _count(flat, "minProperties", 0)
        if max_props is not None:
            if extra is None and max_props >= len(possible):
                pass
            elif all_required and max_props >= len(possible):
                max_extra = max_props - len(possible)
            elif max_props < len([m for m in possible if m.required]):
                return None
            else:
                tr.refuse(
                    "maxProperties", tr.keyword_pointer(flat, "maxProperties"), "with optional properties"
                )
        if min_props > len(set(required)):
            if min_props == 1:
                allow_empty = False  # duplicate extra keys still leave one key
            else:
                tr.refuse(
                    "minProperties", tr.keyword_pointer(flat, "minProperties"), "more than the required"
                )
        return object_regex(self._budget, layout, members, extra, max_extra, allow_empty)

    def _key_regex(self, excluded: list[str]) -> str:
        """``property_name_regex``, its size bounded before it is built."""
        if not excluded:
            return _STRING
        self._budget.check(property_name_regex_size(excluded))
        return property_name_regex(excluded)  # no counted repetition: its size is its length

    def pairwise_disjoint(self, branches: list) -> bool:
        """True when no instance can satisfy two of ``branches`` (then oneOf is the same as anyOf)."""
        flats = [self._shallow(b, 0) for b in branches]
        return all(_disjoint(a, b, self, 0) for i, a in enumerate(flats) for b in flats[i + 1 :])

    def _shallow(self, node: object, hops: int) -> dict | None:
        """Follows $ref and merges allOf without recursion bookkeeping (for the disjointness test)."""
        if node is False or hops > 8:
            return None if node is False else {}
        if node is True or not isinstance(node, dict):
            return {}
        flat = {k: v for k, v in node.items() if k not in ("$ref", "allOf") and k not in ANNOTATIONS}
        members = list(node.get("allOf", []))
        if "$ref" in node:
            members.append(self._tr.resolve_quietly(node["$ref"]))
        for member in members:
            other = self._shallow(member, hops + 1)
            if other is None:
                return None
            flat = merge({**flat, ORIGINS: {}}, other, lambda *args: None)
        return flat


def _values(flat: dict) -> list | None:
    if "const" in flat:
        return [flat["const"]]
    return flat.get("enum")


def _value_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "integer" if float(value).is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def _disjoint(a: dict | None, b: dict | None, builders: TypeBuilders, depth: int) -> bool:
    if a is None or b is None:
        return True
    va, vb = _values(a), _values(b)
    if va is not None and vb is not None and not {value_key(v) for v in va} & {value_key(v) for v in vb}:
        return True
    ta = {_value_type(v) for v in va} if va is not None else type_set(a)
    tb = {_value_type(v) for v in vb} if vb is not None else type_set(b)
    if not ta & tb:
        return True
    if depth < 3:
        props_a, props_b = a.get("properties", {}), b.get("properties", {})
        for name in set(a.get("required", [])) & set(b.get("required", [])):
            if name in props_a and name in props_b:
                left, right = builders._shallow(props_a[name], 0), builders._shallow(props_b[name], 0)
                if _disjoint(left, right, builders, depth + 1):
                    return True
    return False


def _count(flat: dict, keyword: str, default: int | None) -> int | None:
    """A non-negative integer keyword; 2.0 is an integer in JSON Schema."""
    value = flat.get(keyword, default)
    return None if value is None else int(value)


def _bound(flat: dict, inclusive: str, exclusive: str, pick) -> tuple[Decimal | None, bool]:
    """The tightest of an inclusive and an exclusive bound: (value, is_exclusive)."""
    candidates = []
    if inclusive in flat:
        candidates.append((Decimal(str(flat[inclusive])), False))
    if exclusive in flat:
        candidates.append((Decimal(str(flat[exclusive])), True))
    if not candidates:
        return None, False
    best = pick(c[0] for c in candidates)
    return best, any(c[1] for c in candidates if c[0] == best)
