"""Numeric bounds become exact regexes: every in-range JSON number matches, nothing else does, in Python
``re`` and in an outlines_core automaton alike."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal, localcontext

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from outlines_core import Index, Vocabulary

from loomlm.grammar.regex_ranges import (
    UNBOUNDED_INTEGER,
    UNBOUNDED_NUMBER,
    integer_range_regex,
    number_range_regex,
)

INTEGER_TEXTS = [str(n) for n in range(-1500, 1501)]
# "١" (Arabic-Indic one) and "１" (fullwidth one) are digits to a Unicode \d; they must never match.
MALFORMED_INTEGERS = ["", " 1", "1 ", "-", "01", "00", "-0", "-00", "-01", "+1"]
MALFORMED_INTEGERS += ["1.0", "1e3", "--1", "0x1", "١", "１"]
MALFORMED_NUMBERS = ["", "-", ".5", "1.", "01", "00.5", "+1", "1..2", "1.5.", "1,5"]
MALFORMED_NUMBERS += ["1e2", "1E-2", "-0", "-0.0", "١"]
INTEGER_BOUNDS = [None, -120, -100, -99, -11, -10, -9, -1, 0, 1, 7, 9, 10, 11, 19]
INTEGER_BOUNDS += [99, 100, 101, 109, 199, 1000, 1200]
DECIMAL_BOUNDS = [
    None,
    *map(Decimal, ["-2.25", "-1", "-0.5", "-0.05", "0", "0.05", "0.5", "1", "1.5", "9.99", "10.01"]),
]
FLAGS = list(itertools.product([False, True], repeat=2))
SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def inside(value, lo, hi, lo_exclusive=False, hi_exclusive=False) -> bool:
    above = lo is None or value > lo or (value == lo and not lo_exclusive)
    below = hi is None or value < hi or (value == hi and not hi_exclusive)
    return above and below


def renderings(value: Decimal, extra_zeros: int = 2) -> list[str]:
    """The shortest decimal spelling of value, and the same with trailing fraction zeros."""
    text = format(value, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    short = f"{whole}.{frac}" if frac else whole
    return [short, f"{whole}.{frac}{'0' * extra_zeros}" if frac else f"{whole}.{'0' * max(extra_zeros, 1)}"]


# ------------------------------------------------------------------------------------------ integers


@pytest.mark.parametrize("lo", INTEGER_BOUNDS)
def test_integer_regex_accepts_exactly_the_range_over_small_bounds(lo):
    for hi in INTEGER_BOUNDS:
        if lo is not None and hi is not None and lo > hi:
            continue
        pattern = re.compile(integer_range_regex(lo, hi))
        for text in INTEGER_TEXTS:
            assert bool(pattern.fullmatch(text)) == inside(int(text), lo, hi), (lo, hi, text)
        for text in MALFORMED_INTEGERS:
            assert not pattern.fullmatch(text), (lo, hi, text)


big_integers = st.integers(-(10**25), 10**25)
POWERS = [sign * (10**k + d) for k in range(27) for d in (-1, 0, 1) for sign in (1, -1)]


@SETTINGS
@given(lo=st.none() | big_integers, hi=st.none() | big_integers, extra=st.lists(big_integers, max_size=20))
def test_integer_regex_is_exact_for_huge_and_negative_bounds(lo, hi, extra):
    assume(lo is None or hi is None or lo <= hi)
    pattern = re.compile(integer_range_regex(lo, hi))
    near = [b + d for b in (lo, hi) if b is not None for d in (-10, -1, 0, 1, 10)]
    for n in near + extra + POWERS:
        assert bool(pattern.fullmatch(str(n))) == inside(n, lo, hi), (lo, hi, n)


def test_integer_regex_is_compact_and_unbounded_forms_are_plain():
    assert integer_range_regex(None, None) == UNBOUNDED_INTEGER
    assert integer_range_regex(1, None) == "[1-9][0-9]*"
    assert integer_range_regex(0, 9) == "[0-9]"
    assert integer_range_regex(10**30, None) == "[1-9][0-9]{30,}"
    assert len(integer_range_regex(-(2**63), 2**63 - 1)) < 2000
    assert len(integer_range_regex(-(10**30) + 7, 10**30 - 3)) < 4000


def test_integer_bounds_may_be_integral_floats_but_not_fractions_bools_or_empty_ranges():
    assert re.fullmatch(integer_range_regex(1.0, Decimal("3")), "2")
    with pytest.raises(ValueError, match=r"minimum 0\.5 .*math\.ceil"):
        integer_range_regex(0.5, 3)
    with pytest.raises(ValueError, match="minimum 5 is greater than maximum 4"):
        integer_range_regex(5, 4)
    with pytest.raises(ValueError, match="maximum"):
        integer_range_regex(0, True)
    with pytest.raises(ValueError, match="digits"):
        integer_range_regex(0, 10**120)


# ------------------------------------------------------------------------------------------- numbers


def number_candidates() -> list[Decimal]:
    grid = [Decimal(k).scaleb(-2) for k in range(-1100, 1101, 7)]
    near = [
        b + sign * Decimal(1).scaleb(-j)
        for b in DECIMAL_BOUNDS
        if b is not None
        for j in range(4)
        for sign in (-1, 0, 1)
    ]
    return sorted(set(grid + near + [Decimal(n) for n in range(-3, 13)]))


NUMBER_TEXTS = [(text, value) for value in number_candidates() for text in renderings(value)]
NUMBER_TEXTS += [("-0", Decimal(0)), ("-0.0", Decimal(0)), ("-0.000", Decimal(0))]


@pytest.mark.parametrize("lo_exclusive, hi_exclusive", FLAGS)
def test_number_regex_accepts_exactly_the_interval_over_small_bounds(lo_exclusive, hi_exclusive):
    for lo, hi in itertools.product(DECIMAL_BOUNDS, repeat=2):
        if lo is None and hi is None:
            continue
        if lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_exclusive or hi_exclusive))):
            continue
        regex = number_range_regex(lo, hi, exclusive_minimum=lo_exclusive, exclusive_maximum=hi_exclusive)
        pattern = re.compile(regex)
        for text, value in NUMBER_TEXTS:
            negative_zero = value == 0 and text.startswith("-")
            expected = inside(value, lo, hi, lo_exclusive, hi_exclusive) and not negative_zero
            assert bool(pattern.fullmatch(text)) == expected, (lo, hi, lo_exclusive, hi_exclusive, text)
        for text in MALFORMED_NUMBERS:
            assert not pattern.fullmatch(text), (regex, text)


decimals = st.builds(
    lambda i, scale: Decimal(i).scaleb(-scale), st.integers(-(10**9), 10**9), st.integers(0, 6)
)


@SETTINGS
@given(
    lo=st.none() | decimals,
    hi=st.none() | decimals,
    flags=st.sampled_from(FLAGS),
    extra=st.lists(decimals, max_size=15),
    zeros=st.integers(0, 3),
)
def test_number_regex_is_exact_for_random_decimals(lo, hi, flags, extra, zeros):
    lo_x, hi_x = flags
    assume(lo is not None or hi is not None)
    assume(lo is None or hi is None or lo < hi or (lo == hi and not lo_x and not hi_x))
    pattern = re.compile(number_range_regex(lo, hi, exclusive_minimum=lo_x, exclusive_maximum=hi_x))
    steps = [Decimal(1).scaleb(-j) for j in (0, 3, 6, 7)]
    near = [b + s * d for b in (lo, hi) if b is not None for d in steps for s in (-1, 0, 1)]
    for value in near + extra + [Decimal(0)]:
        for text in renderings(value, zeros):
            expected = inside(value, lo, hi, lo_x, hi_x) and not (value == 0 and text.startswith("-"))
            assert bool(pattern.fullmatch(text)) == expected, (lo, hi, flags, text)


@SETTINGS
@given(
    lo=st.none() | st.integers(10**27, 10**30) | st.integers(-(10**30), -(10**27)),
    width=st.integers(1, 10**30),
    scale=st.integers(0, 6),
)
def test_number_regex_is_exact_for_huge_bounds(lo, width, scale):
    with localcontext() as ctx:
        ctx.prec = 80  # the test's own arithmetic on 30+ digit values must not round
        lo_d = None if lo is None else Decimal(lo).scaleb(-scale)
        hi_d = Decimal(width) if lo is None else lo_d + Decimal(width).scaleb(-scale)
        bounds = [b for b in (lo_d, hi_d) if b is not None]
        values = [b + s * Decimal(1).scaleb(-j) for b in bounds for j in (0, 6, 7) for s in (-1, 0, 1)]
    # called under the default 28-digit context, which must not round the bounds either
    pattern = re.compile(number_range_regex(lo_d, hi_d, exclusive_minimum=True))
    for value in values:
        assert bool(pattern.fullmatch(renderings(value)[0])) == inside(value, lo_d, hi_d, True, False)


def test_float_bounds_mean_their_shortest_decimal_repr():
    pattern = re.compile(number_range_regex(0.1, 0.3))
    assert pattern.fullmatch("0.1") and pattern.fullmatch("0.3") and pattern.fullmatch("0.30000")
    assert not pattern.fullmatch("0.30000000000000004") and not pattern.fullmatch("0.0999")


def test_strict_bounds_reject_the_bound_whatever_its_trailing_zeros():
    pattern = re.compile(number_range_regex(0.5, 2, exclusive_minimum=True, exclusive_maximum=True))
    for text in ["0.5", "0.50", "0.5000", "2", "2.0", "2.000"]:
        assert not pattern.fullmatch(text), text
    for text in ["0.5001", "0.50000001", "1", "1.99999", "1.9990"]:
        assert pattern.fullmatch(text), text


def test_negative_zero_is_never_produced_but_negative_fractions_are():
    pattern = re.compile(number_range_regex(-1, 1))
    assert pattern.fullmatch("0") and pattern.fullmatch("0.000") and pattern.fullmatch("-0.5")
    assert not any(pattern.fullmatch(t) for t in ["-0", "-0.0", "-0.000"])
    assert not re.fullmatch(number_range_regex(-1, 0, exclusive_maximum=True), "-0.0")


def test_unbounded_and_common_number_regexes():
    assert number_range_regex() == UNBOUNDED_NUMBER
    assert re.fullmatch(UNBOUNDED_NUMBER, "-1.5e+10") and not re.fullmatch(UNBOUNDED_NUMBER, "01")
    assert number_range_regex(0) == r"(?:[1-9][0-9]*|0)(?:\.[0-9]+)?"
    assert (
        len(number_range_regex(Decimal("-9223372036854775808.123456"), Decimal("9223372036854775807.6543")))
        < 3000
    )


def test_empty_or_malformed_number_bounds_raise_value_error():
    with pytest.raises(ValueError, match="exclusive minimum 1 and maximum 1"):
        number_range_regex(1, 1, exclusive_minimum=True)
    with pytest.raises(ValueError, match="empty number range"):
        number_range_regex(2, 1.5)
    for bad in (float("nan"), float("inf"), Decimal("Infinity"), True, "1"):
        with pytest.raises(ValueError, match="minimum"):
            number_range_regex(bad, None)
    with pytest.raises(ValueError, match="nested regex groups"):
        number_range_regex(0, Decimal("0." + "12345678" * 8))


def test_results_concatenate_safely():
    for regex in [integer_range_regex(-5, 5), number_range_regex(-2.25, 3.5), number_range_regex(0, 10)]:
        wrapped = re.compile(f"a{regex}b")
        for text in ["-5", "5", "3.5", "-2.25", "10", "0", "6", "-6", "11"]:
            assert bool(wrapped.fullmatch(f"a{text}b")) == bool(re.fullmatch(regex, text)), (regex, text)


# ------------------------------------------------------------------------------------- outlines_core


@pytest.fixture(scope="module")
def byte_vocabulary():
    return Vocabulary(256, {bytes([b]): [b] for b in range(256)})


def automaton_accepts(index: Index, text: str) -> bool:
    state = index.get_initial_state()
    for byte in text.encode():
        state = index.get_next_state(state, byte)
        if state is None:
            return False
    return index.is_final_state(state)


@pytest.mark.parametrize("bounds", [(-120, 1200), (5, 123), (-99, -10), (0, None), (None, -7)])
def test_integer_regex_alone_drives_an_outlines_core_automaton(byte_vocabulary, bounds):
    """Top level, the automaton has leftmost-first semantics: "1|10" never completes "10", so the
    alternatives must come longest first. Agreement with ``re`` over every string proves the order."""
    regex = integer_range_regex(*bounds)
    index = Index(regex, byte_vocabulary)
    for text in INTEGER_TEXTS + MALFORMED_INTEGERS:
        assert automaton_accepts(index, text) == bool(re.fullmatch(regex, text)), (regex, text)


@pytest.mark.parametrize(
    "regex",
    [
        integer_range_regex(-(2**63), 2**63 - 1),
        number_range_regex(-2.25, 3.5, exclusive_maximum=True),
        number_range_regex(0, None, exclusive_minimum=True),
        number_range_regex(Decimal("0.05"), Decimal("10.5")),
        number_range_regex(None, Decimal("-1.25")),
    ],
)
def test_regexes_embedded_in_json_drive_an_outlines_core_automaton(byte_vocabulary, regex):
    """Inside a JSON value, as the schema translator emits it. (At top level outlines_core drops the step
    from a complete match into a non-match, so "1" could never grow into "1.5" there.)"""
    index = Index(rf'\{{"x":{regex}\}}', byte_vocabulary)
    texts = [t for t, _ in NUMBER_TEXTS] + MALFORMED_NUMBERS + [str(-(2**63)), str(2**63 - 1), str(2**63)]
    for text in texts:
        expected = bool(re.fullmatch(regex, text))
        assert automaton_accepts(index, f'{{"x":{text}}}') == expected, (regex, text)
