"""Translation of a JSON Schema ``pattern`` (ECMA-262, unanchored) into a regex over JSON string text.

The pattern is parsed into a small tree and re-emitted: each matched character is written in its one
canonical JSON spelling (``json.dumps`` with ``ensure_ascii=False``), so a pattern character class never
meets an escape sequence it does not expect. Unanchored ends become "any string characters".
Python ``re`` (what jsonschema uses) and ECMA disagree on some escapes; the translation keeps to their
intersection: ``\\d`` is [0-9], ``\\w`` is [A-Za-z0-9_], and ``\\D``/``\\W``/``\\S`` are restricted to
ASCII (sound, slightly narrower). Lookaround, backreferences, word boundaries, Unicode properties,
anchors inside the pattern and flags raise :class:`PatternError`.
"""

from __future__ import annotations

import sys

from loomlm.grammar.schema_budget import TranslationBudget, expanded_size, running_total, sized
from loomlm.grammar.schema_charsets import (
    CONTROL_ESCAPES,
    DOT_EXCLUDED,
    SHORTHANDS,
    PatternError,
    charset_regex,
    negate_ranges,
    normalize_ranges,
)
from loomlm.grammar.schema_limits import MAX_PATTERN_NESTING
from loomlm.grammar.schema_strings import STRING_CHAR

__all__ = ["PatternError", "translate_pattern"]

_FREE = sized(f"{STRING_CHAR}*", expanded_size(f"{STRING_CHAR}*"))  # an unanchored end


class _Parser:
    """Recursive descent over one ECMA pattern; nodes are tuples, see ``_emit``."""

    def __init__(self, text: str) -> None:
        self._text, self._pos, self._depth = text, 0, 0

    def _peek(self, ahead: int = 0) -> str:
        index = self._pos + ahead
        return self._text[index] if index < len(self._text) else ""

    def _next(self) -> str:
        char = self._peek()
        if not char:
            raise PatternError("the pattern ends too early")
        self._pos += 1
        return char

    def parse(self) -> list:
        alternatives = self._alternatives()
        if self._pos != len(self._text):
            raise PatternError(f"unbalanced ')' at offset {self._pos}")
        return alternatives

    def _alternatives(self) -> list:
        alternatives = [self._sequence()]
        while self._peek() == "|":
            self._pos += 1
            alternatives.append(self._sequence())
        return alternatives

    def _sequence(self) -> list:
        items = []
        while self._peek() and self._peek() not in "|)":
            atom = self._atom()
            items.append(self._quantifier(atom))
        return items

    def _quantifier(self, atom: tuple) -> tuple:
        char = self._peek()
        bounds = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(char)
        if bounds is not None:
            self._pos += 1
        elif char == "{":
            bounds = self._braces()
        if bounds is None:
            return atom
        if atom[0] == "anchor":
            raise PatternError("a quantified anchor is not supported")
        if self._peek() == "?":
            self._pos += 1  # lazy and greedy quantifiers match the same strings
        if bounds[1] is not None and bounds[1] < bounds[0]:
            raise PatternError("quantifier bounds are out of order")
        return ("rep", atom, bounds[0], bounds[1])

    def _braces(self) -> tuple[int, int | None] | None:
        end = self._text.find("}", self._pos)
        body = self._text[self._pos + 1 : end] if end > 0 else ""
        low, comma, high = body.partition(",")
        if not low and comma and high.isdigit():
            raise PatternError("'{,n}' is a quantifier in Python but a literal in ECMA")
        if not low.isdigit() or (high and not high.isdigit()):
            return None  # not a quantifier: "{" is a literal character
        if len(low) > 9 or len(high) > 9:
            raise PatternError("a repetition count over 999999999 is not supported")
        self._pos = end + 1
        return int(low), (int(high) if high else None) if comma else int(low)

    def _atom(self) -> tuple:
        char = self._next()
        if char == "(":
            if self._peek() == "?":
                if self._text.startswith("?:", self._pos):
                    self._pos += 2
                elif self._text.startswith("?<", self._pos) and self._peek(2) not in "=!":
                    self._pos = self._text.index(">", self._pos) + 1  # a named group is a plain group
                else:
                    raise PatternError("lookaround assertions and inline flags are not supported")
            self._depth += 1
            if self._depth > MAX_PATTERN_NESTING:
                raise PatternError(f"groups nest more than {MAX_PATTERN_NESTING} deep")
            inner = self._alternatives()
            if self._next() != ")":
                raise PatternError("missing ')'")
            self._depth -= 1
            return ("alt", inner)
        if char in "^$":
            return ("anchor", char)
        if char == ".":
            return ("set", negate_ranges(DOT_EXCLUDED))
        if char == "[":
            return ("set", self._class())
        if char == "{":
            self._pos -= 1
            if self._braces() is not None:
                raise PatternError(f"nothing to repeat at offset {self._pos}")
            self._pos += 1
        if char in "*+?":
            raise PatternError(f"nothing to repeat at offset {self._pos - 1}")
        if char == "\\":
            return ("set", self._escape(in_class=False))
        return ("set", [(ord(char), ord(char))])

    def _class(self) -> list[tuple[int, int]]:
        negated = self._peek() == "^"
        self._pos += negated
        if self._peek() == "]":
            raise PatternError("empty character classes are read differently by ECMA and Python")
        ranges: list[tuple[int, int]] = []
        while True:
            char = self._next()
            if char == "]":
                break
            if char == "[" or (char in "&-~|" and self._peek() == char):
                raise PatternError("nested sets or set operations in a class are not supported")
            if char == "\\":
                letter = self._peek()
                item = self._escape(in_class=True)
                if negated and letter in "dDwWsS":
                    raise PatternError("a shorthand class inside a negated class is not supported")
            else:
                item = [(ord(char), ord(char))]
            if self._peek() == "-" and self._peek(1) not in ("]", ""):
                self._pos += 1
                high_char = self._next()
                high = (
                    self._escape(in_class=True) if high_char == "\\" else [(ord(high_char), ord(high_char))]
                )
                if len(item) != 1 or len(high) != 1 or item[0][0] != item[0][1] or high[0][0] < item[0][0]:
                    raise PatternError("invalid range in a character class")
                item = [(item[0][0], high[0][0])]
            ranges += item
        return negate_ranges(ranges) if negated else normalize_ranges(ranges)

    def _escape(self, in_class: bool) -> list[tuple[int, int]]:
        char = self._next()
        if char in SHORTHANDS:
            return SHORTHANDS[char]
        if char in CONTROL_ESCAPES:
            return [(CONTROL_ESCAPES[char],) * 2]
        if char == "b" and in_class:
            return [(0x08, 0x08)]
        if char == "0" and not self._peek().isdigit():
            return [(0, 0)]
        if char in "xu":
            width = 2 if char == "x" else 4
            digits = self._text[self._pos : self._pos + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise PatternError(f"malformed \\{char} escape")
            self._pos += width
            code = int(digits, 16)
            if 0xD800 <= code <= 0xDFFF:
                raise PatternError("surrogate escapes are not supported")
            return [(code, code)]
        if char.isalnum() or char == "_":
            raise PatternError(f"escape \\{char} (boundary, backreference, property ...) is not supported")
        return [(ord(char), ord(char))]


def _emit(node: tuple, budget: TranslationBudget) -> tuple[str, int, int | None]:
    """(regex, min chars, max chars or None) of one node, combined through ``budget``."""
    kind = node[0]
    if kind == "set":
        return charset_regex(node[1]), 1, 1
    if kind == "anchor":
        raise PatternError("anchors are only supported at the start or end of the pattern")
    if kind == "rep":
        regex, low, high = _emit(node[1], budget)
        top = None if node[3] is None or high is None else high * node[3]
        return budget.repeat(budget.concat("(?:", regex, ")"), node[2], node[3]), low * node[2], top
    return _emit_alternatives(node[1], budget)


def _alternation(regexes: list[str], budget: TranslationBudget) -> str:
    """``(?:a|b|...)`` (duplicates kept), or the one regex."""
    if len(regexes) == 1:
        return regexes[0]
    parts = ["(?:"]
    for regex in regexes:
        parts += [regex, "|"]
    parts[-1] = ")"
    return budget.concat(*parts)


def _emit_alternatives(alternatives: list, budget: TranslationBudget) -> tuple[str, int, int | None]:
    parts = [_emit_sequence(items, budget) for items in alternatives]
    high = None if any(p[2] is None for p in parts) else max(p[2] for p in parts)
    return _alternation([p[0] for p in parts], budget), min(p[1] for p in parts), high


def _emit_sequence(items: list, budget: TranslationBudget) -> tuple[str, int, int | None]:
    regexes, low, high = [], 0, 0
    add = running_total(budget)
    for item in items:
        part, part_low, part_high = _emit(item, budget)
        regexes.append(part)
        add(part)
        low += part_low
        high = None if high is None or part_high is None else high + part_high
    return budget.concat(*regexes), low, high


def translate_pattern(pattern: str, budget: TranslationBudget | None = None) -> tuple[str, int, int | None]:
    """(regex of the JSON string content, min chars, max chars or None) for an unanchored pattern.
    The regex grows through ``budget`` (default: unlimited), so an oversize one is never built."""
    budget = budget or TranslationBudget(sys.maxsize)
    parts = []
    add = running_total(budget)
    for items in _Parser(pattern).parse():
        anchored_start = bool(items) and items[0] == ("anchor", "^")
        items = items[1:] if anchored_start else items
        anchored_end = bool(items) and items[-1] == ("anchor", "$")
        items = items[:-1] if anchored_end else items
        regex, low, high = _emit_sequence(items, budget)
        regex = budget.concat("" if anchored_start else _FREE, regex, "" if anchored_end else _FREE)
        parts.append((regex, low, high if anchored_start and anchored_end else None))
        add(regex)
    high = None if any(p[2] is None for p in parts) else max(p[2] for p in parts)
    return _alternation([p[0] for p in parts], budget), min(p[1] for p in parts), high
