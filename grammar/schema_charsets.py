"""Character sets of JSON Schema ``pattern`` translation: code point ranges, ECMA shorthand classes and
their regex over JSON string text, each character in its one canonical JSON spelling (``json.dumps``
with ``ensure_ascii=False``; a quote as ``\\u0022``, see ``schema_strings.COUNTED_CHAR``).
"""

from __future__ import annotations

import json

from loomlm.grammar.schema_strings import escape_literal

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
DOT_EXCLUDED = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]
CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B}


class PatternError(ValueError):
    """A pattern construct that cannot be translated faithfully."""


def normalize_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return _intersect(out, _UNIVERSE) if out else out


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(x, y), min(p, q)) for x, p in a for y, q in b if max(x, y) <= min(p, q)]


def negate_ranges(
    ranges: list[tuple[int, int]], within: list[tuple[int, int]] = _UNIVERSE
) -> list[tuple[int, int]]:
    gaps, start = [], 0
    for lo, hi in normalize_ranges(ranges):
        if lo > start:
            gaps.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX_CODE:
        gaps.append((start, _MAX_CODE))
    return _intersect(gaps, within)


SHORTHANDS = {
    "d": _DIGIT,
    "w": _WORD,
    "s": _SPACE,
    "D": negate_ranges(_DIGIT, _ASCII),
    "W": negate_ranges(_WORD, _ASCII),
    "S": negate_ranges(_PY_ASCII_SPACE, _ASCII),
}


def _code_point(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def charset_regex(ranges: list[tuple[int, int]]) -> str:
    """The canonical JSON spellings of the characters in ``ranges``, as one regex group."""
    special = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
    plain = _intersect(normalize_ranges(ranges), negate_ranges(special))
    options = []
    if plain:
        options.append(
            "["
            + "".join(_code_point(lo) + ("" if lo == hi else "-" + _code_point(hi)) for lo, hi in plain)
            + "]"
        )
    for lo, hi in _intersect(normalize_ranges(ranges), special):
        # A quote is spelled \u0022 (see schema_strings.COUNTED_CHAR), the others as json.dumps does.
        options += [
            escape_literal(json.dumps(chr(c))[1:-1] if c != 0x22 else "\\u0022") for c in range(lo, hi + 1)
        ]
    if not options:
        raise PatternError("the pattern has a character class that matches nothing")
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"
