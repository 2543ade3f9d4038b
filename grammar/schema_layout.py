"""Whitespace layout and literal JSON values for the schema translator.

A :class:`Layout` knows the nesting depth it sits at, so "pretty" output is exactly the layout of
``json.dumps(value, indent=n)`` (never free whitespace). This module also serializes ``const``/``enum``
values into regex literals and builds the bounded-depth "any JSON value" regex.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from loomlm.grammar.schema_strings import STRING_REGEX, escape_literal

NULL_REGEX = "null"
BOOLEAN_REGEX = "(?:true|false)"
INTEGER_REGEX = "-?(?:0|[1-9][0-9]*)"
# A float literal with 300+ mantissa digits would overflow to infinity; nothing else does (the exponent
# has at most two digits). Counted mantissa digits are avoided: they make outlines-core compile slowly.
NUMBER_REGEX = f"{INTEGER_REGEX}(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]{{1,2}})?"


def alternation(options: list[str]) -> str | None:
    """``(?:a|b|...)`` without duplicates; ``None`` (the empty language) when there is no option."""
    unique = list(dict.fromkeys(options))
    if not unique:
        return None
    if len(unique) == 1:
        return unique[0]
    return "(?:" + "|".join(unique) + ")"


def normalize_value(value: object) -> object:
    """Integral floats become ints (JSON Schema sees 1.0 == 1), so one value has one serialization."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, list):
        return [normalize_value(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize_value(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Layout:
    """Separators at one nesting depth: compact (no whitespace) or exactly ``json.dumps(indent=n)``."""

    pretty: bool
    indent: int
    depth: int = 0

    def deeper(self) -> Layout:
        return Layout(self.pretty, self.indent, self.depth + 1)

    @property
    def item_sep(self) -> str:
        return ",\\n" + " " * (self.indent * (self.depth + 1)) if self.pretty else ","

    @property
    def key_sep(self) -> str:
        return ": " if self.pretty else ":"

    def container(self, open_: str, body: str | None, close: str, allow_empty: bool) -> str | None:
        """``open body close`` (body non-empty) and/or the empty container, as ``json.dumps`` lays them."""
        options = []
        if allow_empty:
            options.append(f"\\{open_}\\{close}")
        if body is not None:
            if self.pretty:
                inner = " " * (self.indent * (self.depth + 1))
                outer = " " * (self.indent * self.depth)
                options.append(f"\\{open_}\\n{inner}{body}\\n{outer}\\{close}")
            else:
                options.append(f"\\{open_}{body}\\{close}")
        return alternation(options)

    def literal(self, value: object) -> str:
        """The regex of one JSON value serialized the way the test/user canonical form writes it."""
        value = normalize_value(value)
        if self.pretty:
            text = json.dumps(value, indent=self.indent, ensure_ascii=False)
            text = text.replace("\n", "\n" + " " * (self.indent * self.depth))
        else:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return escape_literal(text)


def any_value_regex(layout: Layout, max_depth: int, check: Callable[[int], None] | None = None) -> str:
    """Any JSON value whose containers nest at most ``max_depth`` deep (0 = scalars only). Each level
    holds the one below four times; ``check`` is told each level's size before it is built."""
    scalars = [STRING_REGEX, NUMBER_REGEX, BOOLEAN_REGEX, NULL_REGEX]
    if max_depth <= 0:
        return "(?:" + "|".join(scalars) + ")"
    inner_layout = layout.deeper()
    inner = any_value_regex(inner_layout, max_depth - 1, check)
    sep = layout.item_sep
    if check is not None:
        check(4 * (len(inner) + len(STRING_REGEX) + len(sep)) + 2 * len(inner_layout.item_sep) + 300)
    array_body = f"{inner}(?:{sep}{inner})*"
    member = f"{STRING_REGEX}{layout.key_sep}{inner}"
    object_body = f"{member}(?:{sep}{member})*"
    array = layout.container("[", array_body, "]", allow_empty=True)
    obj = layout.container("{", object_body, "}", allow_empty=True)
    return "(?:" + "|".join([*scalars, array, obj]) + ")"
