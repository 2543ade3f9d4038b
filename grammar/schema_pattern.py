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

import json

from loomlm.grammar.schema_strings import STRING_CHAR, escape_literal, quantified

_MAX_CODE = 0x10FFFF
# U+10FFFF is left out: the grammar compiler uses it as the end-of-text marker (see schema_strings).
_UNIVERSE = [(0, 0xD7FF), (0xE000, _MAX_CODE - 1)]
_ASCII = [(0, 0x7F)]
_DIGIT = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
# ECMA whitespace that Python's \s also matches (U+FEFF is ECMA-only; U+001C-U+001F are Python-only).
_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029)]
_SPACE += [(0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
_PY_ASCII_SPACE = [(0x09, 0x0D), (0x1C, 0x20)]
_DOT_EXCLUDED = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B}


class PatternError(ValueError):
    """A pattern construct that cannot be translated faithfully."""


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return _intersect(out, _UNIVERSE) if out else out


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(x, y), min(p, q)) for x, p in a for y, q in b if max(x, y) <= min(p, q)]


def _negate(
    ranges: list[tuple[int, int]], within: list[tuple[int, int]] = _UNIVERSE
) -> list[tuple[int, int]]:
    gaps, start = [], 0
    for lo, hi in _normalize(ranges):
        if lo > start:
            gaps.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX_CODE:
        gaps.append((start, _MAX_CODE))
    return _intersect(gaps, within)


_SHORTHANDS = {
    "d": _DIGIT,
    "w": _WORD,
    "s": _SPACE,
    "D": _negate(_DIGIT, _ASCII),
    "W": _negate(_WORD, _ASCII),
    "S": _negate(_PY_ASCII_SPACE, _ASCII),
}


def _code_point(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def charset_regex(ranges: list[tuple[int, int]]) -> str:
    """The canonical JSON spellings of the characters in ``ranges``, as one regex group."""
    special = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
    plain = _intersect(_normalize(ranges), _negate(special))
    options = []
    if plain:
        options.append(
            "["
            + "".join(_code_point(lo) + ("" if lo == hi else "-" + _code_point(hi)) for lo, hi in plain)
            + "]"
        )
    for lo, hi in _intersect(_normalize(ranges), special):
        # A quote is spelled \u0022 (see schema_strings.COUNTED_CHAR), the others as json.dumps does.
        options += [
            escape_literal(json.dumps(chr(c))[1:-1] if c != 0x22 else "\\u0022") for c in range(lo, hi + 1)
        ]
    if not options:
        raise PatternError("the pattern has a character class that matches nothing")
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"


class _Parser:
    """Recursive descent over one ECMA pattern; nodes are tuples, see ``_emit``."""

    def __init__(self, text: str) -> None:
        self._text, self._pos = text, 0

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
            inner = self._alternatives()
            if self._next() != ")":
                raise PatternError("missing ')'")
            return ("alt", inner)
        if char in "^$":
            return ("anchor", char)
        if char == ".":
            return ("set", _negate(_DOT_EXCLUDED))
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
        return _negate(ranges) if negated else _normalize(ranges)

    def _escape(self, in_class: bool) -> list[tuple[int, int]]:
        char = self._next()
        if char in _SHORTHANDS:
            return _SHORTHANDS[char]
        if char in _CONTROL_ESCAPES:
            return [(_CONTROL_ESCAPES[char],) * 2]
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


def _emit(node: tuple) -> tuple[str, int, int | None]:
    """(regex, min chars, max chars or None) of one node."""
    kind = node[0]
    if kind == "set":
        return charset_regex(node[1]), 1, 1
    if kind == "anchor":
        raise PatternError("anchors are only supported at the start or end of the pattern")
    if kind == "rep":
        regex, low, high = _emit(node[1])
        top = None if node[3] is None or high is None else high * node[3]
        return quantified(f"(?:{regex})", node[2], node[3]), low * node[2], top
    return _emit_alternatives(node[1])


def _emit_alternatives(alternatives: list) -> tuple[str, int, int | None]:
    parts = [_emit_sequence(items) for items in alternatives]
    high = None if any(p[2] is None for p in parts) else max(p[2] for p in parts)
    regex = parts[0][0] if len(parts) == 1 else "(?:" + "|".join(p[0] for p in parts) + ")"
    return regex, min(p[1] for p in parts), high


def _emit_sequence(items: list) -> tuple[str, int, int | None]:
    regex, low, high = "", 0, 0
    for item in items:
        part, part_low, part_high = _emit(item)
        regex, low = regex + part, low + part_low
        high = None if high is None or part_high is None else high + part_high
    return regex, low, high


def translate_pattern(pattern: str) -> tuple[str, int, int | None]:
    """(regex of the JSON string content, min chars, max chars or None) for an unanchored pattern."""
    parts = []
    for items in _Parser(pattern).parse():
        anchored_start = bool(items) and items[0] == ("anchor", "^")
        items = items[1:] if anchored_start else items
        anchored_end = bool(items) and items[-1] == ("anchor", "$")
        items = items[:-1] if anchored_end else items
        regex, low, high = _emit_sequence(items)
        free = f"{STRING_CHAR}*"
        regex = ("" if anchored_start else free) + regex + ("" if anchored_end else free)
        parts.append((regex, low, high if anchored_start and anchored_end else None))
    high = None if any(p[2] is None for p in parts) else max(p[2] for p in parts)
    regex = parts[0][0] if len(parts) == 1 else "(?:" + "|".join(p[0] for p in parts) + ")"
    return regex, min(p[1] for p in parts), high
