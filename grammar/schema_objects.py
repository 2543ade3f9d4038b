"""Regex assembly for JSON objects and arrays from already translated member regexes.

Objects: declared properties come first, in schema order, each required or optional, then extra
members. The optional-property regex stays quadratic in the number of properties (never exponential):
before the first required property every optional one is ``(member,)?``, after it ``(,member)?``; with
no required property one alternative per "first emitted property" is needed.
Arrays: positional ``prefixItems`` then repeated ``items``, between ``minItems`` and ``maxItems``.
A member regex of ``None`` is the empty language (a ``false`` schema, a cut recursion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from loomlm.grammar.schema_budget import TranslationBudget
from loomlm.grammar.schema_layout import Layout
from loomlm.grammar.schema_strings import escape_literal


@dataclass(frozen=True, slots=True)
class Member:
    """One declared property: its name, its value regex (None = impossible) and whether it is required."""

    name: str
    value: str | None
    required: bool


def object_regex(
    budget: TranslationBudget,
    layout: Layout,
    members: list[Member],
    extra: tuple[str, str] | None,
    max_extra: int | None = None,
    allow_empty: bool = True,
) -> str | None:
    """An object with ``members`` then up to ``max_extra`` members ``extra`` = (key regex, value regex).
    Every piece is combined through ``budget``, so an oversize object stops before it is built."""
    items: list[tuple[str, bool]] = []  # (member regex, required)
    for member in members:
        if member.value is None:
            if member.required:
                return None
            continue
        key = escape_literal(json.dumps(member.name, ensure_ascii=False))
        items.append((budget.concat(key, layout.key_sep, member.value), member.required))
    extra_item = None
    if extra is not None and (max_extra is None or max_extra > 0):
        extra_item = budget.concat(extra[0], layout.key_sep, extra[1])
    sep = layout.item_sep
    extra_tail = ""
    if extra_item is not None:
        extra_tail = budget.repeat(budget.concat("(?:", sep, extra_item, ")"), 0, max_extra)
    bodies = budget.alternatives()
    first_required = next((i for i, (_, req) in enumerate(items) if req), None)
    if first_required is not None:
        parts = []
        for item, _ in items[:first_required]:
            parts += ["(?:", item, sep, ")?"]
        parts.append(items[first_required][0])
        for item, required in items[first_required + 1 :]:
            parts += [sep, item] if required else ["(?:", sep, item, ")?"]
        bodies.add(budget.concat(*parts, extra_tail))
        allow_empty = False
    else:
        # One body per "first emitted property": quadratic in the number of optional properties.
        optional = [budget.concat("(?:", sep, item, ")?") for item, _ in items]
        for index, (item, _) in enumerate(items):
            bodies.add(budget.concat(item, *optional[index + 1 :], extra_tail))
        if extra_item is not None:
            first_extra = budget.repeat(
                budget.concat("(?:", sep, extra_item, ")"), 0, None if max_extra is None else max_extra - 1
            )
            bodies.add(budget.concat(extra_item, first_extra))
    return budget.container(layout, "{", bodies.regex(), "}", allow_empty)


def array_regex(
    budget: TranslationBudget,
    layout: Layout,
    prefix: list[str | None],
    rest: str | None,
    min_items: int,
    max_items: int | None,
) -> str | None:
    """An array whose item ``i`` matches ``prefix[i]``, later items ``rest``, length in [min, max]."""
    # A position whose schema is impossible caps the length below it.
    for index, item in enumerate(prefix):
        if item is None:
            prefix, rest = prefix[:index], None
            break
    cap = len(prefix) if rest is None else None
    if cap is not None:
        max_items = cap if max_items is None else min(max_items, cap)
    if max_items is not None and max_items < min_items:
        return None
    if max_items == 0:
        return layout.container("[", None, "]", allow_empty=True)
    sep = layout.item_sep
    # Built from the last position backwards: tail(j) = the items from position j onwards.
    k = len(prefix)
    tail = ""
    if rest is not None and (max_items is None or max_items > k):
        low = max(min_items - k, 0)
        high = None if max_items is None else max_items - k
        following = budget.concat("(?:", sep, rest, ")")
        if k == 0:
            repeated = budget.repeat(following, max(low - 1, 0), None if high is None else high - 1)
            return budget.container(layout, "[", budget.concat(rest, repeated), "]", min_items == 0)
        tail = budget.repeat(following, low, high)
    stop = k if max_items is None else min(k, max_items)
    for index in range(stop - 1, -1, -1):
        lead = "" if index == 0 else sep
        segment = budget.concat(lead, prefix[index], tail)
        tail = segment if index < min_items or index == 0 else budget.concat("(?:", segment, ")?")
    return budget.container(layout, "[", tail, "]", min_items == 0)
