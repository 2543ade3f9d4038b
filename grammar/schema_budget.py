"""The size budget of the JSON Schema -> regex translation, checked as the regex grows.

Without a bound, a recursive schema (``$ref`` unrolled ``max_recursion_depth`` times) or nested arrays
grow the regex exponentially: a Kubernetes CRD schema grew the process to 23 GB. The translator asks a
:class:`TranslationBudget` at every step that combines sub-regexes, with the size the result *would*
have, and stops with :class:`GrammarTooLargeError` (naming the JSON Pointer) before allocating it.

The size of a regex is its length with each counted repetition ``x{n,m}`` weighing ``m`` copies of
``x`` (``x{n,}``: n + 1): that is what the automaton builder expands, so ``maxItems: 200`` of a 3 kB
object weighs 600 kB although its text is 7 kB. A regex heavier than its length travels as a
:class:`SizedRegex` (a ``str`` that knows its size); a plain ``str`` weighs its length.
The schema document itself is checked before translation by ``schema_limits``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from loomlm.grammar.errors import GrammarTooLargeError
from loomlm.grammar.schema_layout import Layout, alternation
from loomlm.grammar.schema_strings import quantified

# Nested translator steps (schema levels with $ref unrolled, $ref/allOf chains, anyOf groups):
# each takes up to ~5 Python frames.
MAX_TRANSLATION_DEPTH = 100

REGEX_ADVICE = (
    "lower max_recursion_depth or the schema's bounds (maxItems, maxLength, maxProperties, pattern "
    "repetitions), split the schema, or use the llguidance grammar backend, which builds no regex"
)
NESTING_ADVICE = (
    "flatten the schema (use $defs and $ref), lower max_recursion_depth or use the llguidance backend"
)


class SizedRegex(str):
    """A regex text with its size (its length plus the copies its counted repetitions expand to)."""

    size: int

    def __new__(cls, text: str, size: int) -> SizedRegex:
        regex = super().__new__(cls, text)
        regex.size = size
        return regex


def size_of(regex: str) -> int:
    return regex.size if isinstance(regex, SizedRegex) else len(regex)


def sized(regex: str, size: int) -> str:
    """``regex`` known to weigh ``size`` (plain ``str`` when that is its length)."""
    return SizedRegex(regex, size) if size != len(regex) else str(regex)


def _with_extra(regex: str, extra: int) -> str:
    """``regex`` carrying ``extra`` size beyond its length (plain ``str`` when there is none)."""
    return SizedRegex(regex, len(regex) + extra) if extra else str(regex)


def _extra(regex: str) -> int:
    return regex.size - len(regex) if isinstance(regex, SizedRegex) else 0


def repeat_copies(low: int, high: int | None) -> int:
    """How many copies of its unit ``quantified(unit, low, high)`` expands to."""
    if high is None:
        return low + 1 if low > 1 else 1
    return high


def expanded_size(regex: str) -> int:
    """The size of a regex given as text (formats, numeric ranges): its length, counted repetitions
    ``{n}``, ``{n,}``, ``{n,m}`` weighing their copies. Linear; for short leaf regexes."""
    totals, lasts = [0], [0]  # per open group: size so far, size of the last atom
    i, n = 0, len(regex)
    while i < n:
        char, width = regex[i], 1
        if char == "\\":
            width = 2
        elif char == "[":
            j = i + 2 if regex.startswith("[^", i) else i + 1
            j += regex[j] == "]" if j < n else 0
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            width = j + 1 - i
        elif char == "(":
            opener = 3 if regex.startswith("(?:", i) else 1
            totals.append(opener)
            lasts.append(0)
            i += opener
            continue
        elif char == "{":
            match = re.match(r"\{(\d+)(,(\d*))?\}", regex[i : i + 40])
            if match:
                low, comma, high = int(match[1]), match[2], match[3]
                copies = repeat_copies(low, int(high) if high else None if comma else low)
                totals[-1] += lasts[-1] * (copies - 1) + match.end()
                lasts[-1] *= copies
                i += match.end()
                continue
        weight = width
        if char == ")" and len(totals) > 1:
            weight = totals.pop() + 1  # the group, opener and closer included
            lasts.pop()
        totals[-1] += weight
        lasts[-1] = weight
        i += width
    return totals[0]


class TranslationBudget:
    """Tracks where the translation is (a stack of JSON Pointers) and refuses any regex over
    ``limit``. Every builder combines sub-regexes through it, so sizes are checked before the text
    exists."""

    def __init__(self, limit: int, advice: str = REGEX_ADVICE) -> None:
        self.limit = limit
        self._advice = advice
        self._pointers: list[str] = []

    @property
    def pointer(self) -> str:
        return self._pointers[-1] if self._pointers else ""

    def enter(self, pointer: str) -> None:
        """One nested translator step at ``pointer``; refused past ``MAX_TRANSLATION_DEPTH``."""
        if len(self._pointers) >= MAX_TRANSLATION_DEPTH:
            raise GrammarTooLargeError(
                "the JSON Schema translation's nesting (schema levels with $ref unrolled)",
                len(self._pointers) + 1,
                MAX_TRANSLATION_DEPTH,
                pointer,
                NESTING_ADVICE,
            )
        self._pointers.append(pointer)

    def leave(self) -> None:
        self._pointers.pop()

    def check(self, size: int) -> None:
        if size > self.limit:
            raise GrammarTooLargeError(
                "the JSON Schema's regex size (counted repetitions expanded)",
                size,
                self.limit,
                self.pointer,
                f"max_regex_len sets that limit, checked before the regex is built: {self._advice}",
            )

    def leaf(self, regex: str) -> str:
        """A regex built whole (a format, a numeric range), weighed by scanning it."""
        size = expanded_size(regex)
        self.check(size)
        return _with_extra(regex, size - len(regex))

    def concat(self, *parts: str) -> str:
        """``"".join(parts)``, checked first."""
        self.check(sum(map(size_of, parts)))
        return _with_extra("".join(parts), sum(map(_extra, parts)))

    def repeat(self, unit: str, low: int, high: int | None) -> str:
        """``quantified(unit, low, high)``, checked first with the copies it expands to."""
        copies = repeat_copies(low, high)
        self.check(copies * size_of(unit) + 24)
        regex = quantified(unit, low, high)
        if not regex:
            return regex
        return _with_extra(regex, (copies - 1) * size_of(unit) + _extra(unit))

    def alternation(self, options: list[str]) -> str | None:
        """``schema_layout.alternation`` (duplicates dropped), checked first."""
        unique = list(dict.fromkeys(options))
        self.check(sum(map(size_of, unique)) + len(unique) + 4)
        regex = alternation(unique)
        return None if regex is None else _with_extra(regex, sum(map(_extra, unique)))

    def container(
        self, layout: Layout, open_: str, body: str | None, close: str, allow_empty: bool
    ) -> str | None:
        """``layout.container``: the body was checked; the brackets and indentation add a little."""
        regex = layout.container(open_, body, close, allow_empty)
        if regex is None:
            return None
        regex = _with_extra(regex, 0 if body is None else _extra(body))
        self.check(size_of(regex))
        return regex

    def alternatives(self) -> Alternatives:
        return Alternatives(self)


class Alternatives:
    """Options gathered one by one for an alternation; their total is checked as each arrives, so a
    list of many large options is never held."""

    def __init__(self, budget: TranslationBudget) -> None:
        self._budget = budget
        self._options: dict[str, None] = {}
        self._size = 0

    def add(self, regex: str | None) -> None:
        if regex is None or regex in self._options:
            return
        self._size += size_of(regex) + 1
        self._budget.check(self._size)
        self._options[regex] = None

    def regex(self) -> str | None:
        return self._budget.alternation(list(self._options))


def running_total(budget: TranslationBudget) -> Callable[[str | None], None]:
    """A counter of sub-regexes that will all appear in one result (object members, tuple items)."""
    total = 0

    def add(regex: str | None) -> None:
        nonlocal total
        if regex is not None:
            total += size_of(regex)
            budget.check(total)

    return add
