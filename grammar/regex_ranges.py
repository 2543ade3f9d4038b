"""Regexes for numeric bounds (JSON Schema ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``).

Owns the translation of an integer or decimal interval into a regex that accepts exactly the JSON
numbers inside it. The output means the same in Python ``re`` and in the Rust regex-automata dialect
that ``outlines_core.Index`` compiles: only ``[0-9]`` classes (``\\d`` is Unicode-wide in Rust),
non-capturing groups, counted repeats; no lookaround, no backreferences. Output is deterministic and
never has a top-level alternation, so it can be concatenated with other pieces as is. Alternatives are
ordered for outlines_core's leftmost-first automaton (see ``_naturals_alts``).

Conventions: integers never match "-0". Bounded number regexes use plain decimal notation only,
``-?(0|[1-9][0-9]*)(\\.[0-9]+)?`` (every in-range value can be written so; bounding exponent forms
would blow up the automaton), never produce negative zero ("-0", "-0.00": "0" spells that value) and
value trailing fraction zeros correctly ("1.50" is 1.5).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

UNBOUNDED_INTEGER = "(?:-?[1-9][0-9]*|0)"  # JSON integer syntax minus "-0"
UNBOUNDED_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_ANY_FRACTION = r"(?:\.[0-9]+)?"
MAX_BOUND_DIGITS = 100  # per bound, before and after the point: the builders recurse once per digit
# Each significant digit of a bound nests one group; outlines_core's regex parser refuses nesting past
# about 60 groups (its limit counts groups, repeats and alternations), and the JSON translator nests more.
MAX_GROUP_DEPTH = 48


def integer_range_regex(minimum: int | None, maximum: int | None) -> str:
    """Regex for the JSON integers n with minimum <= n <= maximum (None: unbounded on that side).

    Integral floats/Decimals (``10.0``) are accepted as bounds; a fractional one raises ValueError
    (round ``minimum`` up and ``maximum`` down first). An empty range raises ValueError.
    """
    lo = _integer_bound(minimum, "minimum")
    hi = _integer_bound(maximum, "maximum")
    if lo is None and hi is None:
        return UNBOUNDED_INTEGER
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty integer range: minimum {minimum} is greater than maximum {maximum}")
    parts = []
    if lo is None or lo < 0:  # negatives are "-" and a magnitude >= 1, so "-0" never matches
        magnitudes = _naturals_alts(1 if hi is None or hi >= 0 else -hi, None if lo is None else -lo)
        parts.append("-" + _alt(magnitudes))
    if hi is None or hi >= 0:
        parts.extend(_naturals_alts(0 if lo is None or lo < 0 else lo, hi))
    return _shallow(_alt(parts), minimum, maximum)


def number_range_regex(
    minimum: int | float | Decimal | None = None,
    maximum: int | float | Decimal | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> str:
    """Regex for the JSON numbers (decimal notation) inside the bounds; see the module docstring.

    Floats are read through ``repr`` (``0.1`` means the decimal 0.1). With no bound at all the result is
    the full JSON number regex, exponent included. An empty interval raises ValueError.
    """
    lo = _decimal_bound(minimum, "minimum")
    hi = _decimal_bound(maximum, "maximum")
    if lo is None and hi is None:
        return UNBOUNDED_NUMBER
    strict = exclusive_minimum or exclusive_maximum
    if lo is not None and hi is not None and (lo > hi or (lo == hi and strict)):
        lo_word = "exclusive minimum" if exclusive_minimum else "minimum"
        hi_word = "exclusive maximum" if exclusive_maximum else "maximum"
        raise ValueError(f"empty number range: {lo_word} {minimum} and {hi_word} {maximum} leave no value")
    parts = []
    if lo is None or lo < 0:  # negatives mirror positives: "-" and a magnitude, bounds swapped
        # copy_negate/copy_abs are exact; unary minus would round to the context's 28 digits
        m_lo, m_lo_x = (Decimal(0), True) if hi is None or hi >= 0 else (hi.copy_negate(), exclusive_maximum)
        m_hi, m_hi_x = (None, False) if lo is None else (lo.copy_negate(), exclusive_minimum)
        parts.append("-" + _alt(_magnitudes_alts(m_lo, m_lo_x, m_hi, m_hi_x)))
    if hi is None or hi > 0 or (hi == 0 and not exclusive_maximum):
        p_lo, p_lo_x = (Decimal(0), False) if lo is None or lo < 0 else (lo, exclusive_minimum)
        parts.extend(_magnitudes_alts(p_lo, p_lo_x, hi, exclusive_maximum))
    return _shallow(_alt(parts), minimum, maximum)


def _integer_bound(value: object, name: str) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        _check_digits(Decimal(value), name)
        return value
    number = _decimal_bound(value, name)
    if number is not None and number != number.to_integral_value():
        rounding = "math.ceil" if name == "minimum" else "math.floor"
        raise ValueError(f"{name} {value!r} of an integer range is fractional; round it with {rounding}")
    return None if number is None else int(number)


def _decimal_bound(value: object, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{name} must be an int, float or Decimal, got {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}; leave the bound out (None) instead")
    _check_digits(number, name)
    return number


def _check_digits(number: Decimal, name: str) -> None:
    # adjusted() first: formatting 1E+999999999 would build a billion-digit string
    too_long = not -MAX_BOUND_DIGITS <= number.adjusted() < MAX_BOUND_DIGITS
    if too_long or len(_split(number)[1]) > MAX_BOUND_DIGITS:
        raise ValueError(
            f"{name} {number} has more than {MAX_BOUND_DIGITS} digits before or after the decimal point, "
            "too many to enforce by regex; use a shorter bound"
        )


def _shallow(regex: str, minimum: object, maximum: object) -> str:
    depth = deepest = 0
    for char in regex:  # the output never holds an escaped parenthesis
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_GROUP_DEPTH:
        raise ValueError(
            f"bounds {minimum} .. {maximum} need {deepest} nested regex groups (limit {MAX_GROUP_DEPTH}); "
            "use bounds with fewer significant digits"
        )
    return regex


def _split(number: Decimal) -> tuple[int, str]:
    """(integer part, fraction digits without trailing zeros) of abs(number)."""
    whole, _, frac = format(number.copy_abs(), "f").partition(".")
    return int(whole), frac.rstrip("0")


def _alt(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _digit_class(first: int, last: int) -> str:
    if first == last:
        return str(first)
    return f"[{first}{last}]" if last == first + 1 else f"[{first}-{last}]"


def _repeat(low: int, high: int | None) -> str:
    """Between low and high (None: unbounded) digits."""
    if high is None:
        return {0: "[0-9]*", 1: "[0-9]+"}.get(low, f"[0-9]{{{low},}}")
    if low == high:
        return {0: "", 1: "[0-9]"}.get(low, f"[0-9]{{{low}}}")
    return f"[0-9]{{{low},{high}}}"


def _by_first_digit(tail_after: Callable[[int], str | None]) -> list[str]:
    """Alternatives "digit c + tail_after(c)" (None: c may not come first); equal tails share a class."""
    runs: list[list] = []  # [first digit, last digit, tail]
    for c in range(10):
        tail = tail_after(c)
        if tail is None:
            continue
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == tail:
            runs[-1][1] = c
        else:
            runs.append([c, c, tail])
    return [_digit_class(first, last) + tail for first, last, tail in runs]


def _fixed_alts(lo: str | None, hi: str | None, n: int) -> list[str]:
    """Alternatives for the digit strings s of length n with lo <= s <= hi (None: open side)."""
    lo = None if lo is None or lo.strip("0") == "" else lo  # "000" and "999" bound nothing
    hi = None if hi is None or hi.strip("9") == "" else hi
    if lo is None and hi is None:
        return [_repeat(n, n)]
    if lo is not None and lo == hi:
        return [lo]

    def tail_after(c: int) -> str | None:
        if (lo is not None and c < int(lo[0])) or (hi is not None and c > int(hi[0])):
            return None
        sub_lo = lo[1:] if lo is not None and c == int(lo[0]) else None
        sub_hi = hi[1:] if hi is not None and c == int(hi[0]) else None
        return _alt(_fixed_alts(sub_lo, sub_hi, n - 1))

    return _by_first_digit(tail_after)


def _naturals_alts(lo: int, hi: int | None) -> list[str]:
    """Alternatives for the canonical decimal strings (no leading zero) of the integers in [lo, hi].

    Requires 0 <= lo <= hi (hi None: no upper bound). Longer numbers come first: outlines_core's automaton
    keeps leftmost-first semantics, where "1|10" never matches "10" (a match by an earlier alternative
    drops the later ones), so no alternative may match a proper prefix of a later one.
    """
    if lo == 0 and hi is not None and hi <= 9:
        return [_digit_class(0, hi)]
    groups: list[list[str]] = []  # by increasing length
    if lo == 0:
        groups.append(["0"])
        lo = 1
    full_from = None  # first length of a run of lengths whose every number is inside
    n = len(str(lo))
    while hi is None or n <= len(str(hi)):
        first, last = 10 ** (n - 1), 10**n - 1
        a, b = max(lo, first), last if hi is None else min(hi, last)
        if a == first and b == last:
            if hi is None:  # this length and every longer one
                groups.append(["[1-9]" + _repeat(n - 1 if full_from is None else full_from - 1, None)])
                full_from = None
                break
            full_from = n if full_from is None else full_from
        else:
            if full_from is not None:
                groups.append(["[1-9]" + _repeat(full_from - 1, n - 2)])
                full_from = None
            groups.append(_fixed_alts(str(a), str(b), n))
        n += 1
    if full_from is not None:
        groups.append(["[1-9]" + _repeat(full_from - 1, n - 2)])
    return [alt for group in reversed(groups) for alt in group]


def _magnitudes_alts(lo: Decimal, lo_x: bool, hi: Decimal | None, hi_x: bool) -> list[str]:
    """Alternatives for ``(0|[1-9][0-9]*)(\\.[0-9]+)?`` valued in the bounds (0 <= lo, interval non-empty)."""
    lo_int, lo_frac = _split(lo)
    hi_int, hi_frac = _split(hi) if hi is not None else (None, None)
    if lo_int == hi_int:  # both bounds fall inside one integer: only its fraction varies
        return [str(lo_int) + _fraction_part(lo_frac, lo_x, hi_frac, hi_x)]
    # Larger integer parts first (see _naturals_alts): "1" must not come before "10.5".
    parts = []
    if hi_int is not None and (hi_frac or not hi_x):  # "< 7" leaves nothing at 7 itself
        parts.append(str(hi_int) + _fraction_part(None, False, hi_frac, hi_x))
    start = lo_int if not lo_frac and not lo_x else lo_int + 1
    end = None if hi_int is None else hi_int - 1
    if end is None or start <= end:
        parts.append(_alt(_naturals_alts(start, end)) + _ANY_FRACTION)
    if start > lo_int:  # the lower integer itself takes only fractions above the bound
        parts.append(str(lo_int) + _fraction_part(lo_frac, lo_x, None, False))
    return parts


# Fraction constraints compare 0.F with 0.D, where D is a digit string without trailing zeros ("" is 0)
# and x says the comparison is strict. None means no bound on that side.


def _zero_inside(lo: str | None, lo_x: bool, hi: str | None, hi_x: bool) -> bool:
    return (lo is None or (lo == "" and not lo_x)) and (hi is None or hi != "" or not hi_x)


def _fraction_part(lo: str | None, lo_x: bool, hi: str | None, hi_x: bool) -> str:
    """Optional "." + digits with 0.F inside the bounds ("" alone when only the integer itself is)."""
    alts = _fraction_alts(lo, lo_x, hi, hi_x)
    if not alts:
        return ""
    body = r"\." + _alt(alts)
    return f"(?:{body})?" if _zero_inside(lo, lo_x, hi, hi_x) else body


def _fraction_any(lo: str | None, lo_x: bool, hi: str | None, hi_x: bool) -> str | None:
    """Digit strings F, empty included, with 0.F inside the bounds; None when there is none."""
    alts = _fraction_alts(lo, lo_x, hi, hi_x)
    zero = _zero_inside(lo, lo_x, hi, hi_x)
    if not alts:
        return "" if zero else None
    if not zero:
        return _alt(alts)
    if alts in (["[0-9]+"], ["0+"]):
        return alts[0][:-1] + "*"
    return "(?:" + "|".join(alts) + ")?"


def _fraction_alts(lo: str | None, lo_x: bool, hi: str | None, hi_x: bool) -> list[str]:
    """Alternatives for the non-empty digit strings F with 0.F inside the bounds (none: empty list)."""
    if lo == "" and not lo_x:
        lo = None
    if lo in (None, "") and hi in (None, ""):
        if hi is None:
            return ["[0-9]+" if lo is None else "0*[1-9][0-9]*"]  # anything / anything above zero
        return ["0+"] if lo is None and not hi_x else []  # zero only / below zero

    def tail_after(c: int) -> str | None:
        sub_lo, sub_hi = None, None
        if lo is not None:
            first = int(lo[0]) if lo else 0
            if c < first:
                return None
            sub_lo = lo[1:] if c == first else None
        if hi is not None:
            first = int(hi[0]) if hi else 0
            if c > first:
                return None
            sub_hi = hi[1:] if c == first else None
        return _fraction_any(sub_lo, lo_x, sub_hi, hi_x)

    return _by_first_digit(tail_after)
