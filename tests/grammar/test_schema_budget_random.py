"""Random schemas (hypothesis) against the regex budget: each translates within it or is refused with
GrammarTooLargeError past it, and the running sizes the budget keeps equal the expanded regex's."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from loomlm.grammar.errors import GrammarTooLargeError
from loomlm.grammar.json_schema import SchemaOptions, schema_to_regex
from loomlm.grammar.schema_budget import expanded_size, size_of
from loomlm.grammar.schema_layout import Layout
from loomlm.grammar.schema_translator import SchemaTranslator

_NAMES = st.text("abcxy", min_size=1, max_size=3)
_LEAVES = st.sampled_from(
    [
        {"type": "integer", "minimum": -5, "maximum": 120},
        {"type": "number"},
        {"type": "string", "maxLength": 40},
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[a-f]{1,4}(x|y{2,3})?$"},
        {"enum": ["a", 1, None]},
        {},
    ]
)


def _grow(children: st.SearchStrategy) -> st.SearchStrategy:
    array = st.tuples(children, st.integers(0, 2), st.integers(0, 30)).map(
        lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}
    )
    tuple_ = st.lists(children, min_size=1, max_size=3).map(lambda items: {"prefixItems": items})
    any_of = st.lists(children, min_size=2, max_size=3).map(lambda branches: {"anyOf": branches})
    obj = st.dictionaries(_NAMES, children, min_size=1, max_size=4).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props)[:1]}
    )
    return st.one_of(array, tuple_, any_of, obj)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.recursive(_LEAVES, _grow, max_leaves=8), budget=st.sampled_from([2_000, 20_000, 200_000]))
def test_random_schemas_fit_the_budget_or_are_refused(schema, budget):
    translator = SchemaTranslator(schema, SchemaOptions(max_regex_len=10**12))
    tracked = translator.translate(schema, "", Layout(pretty=False, indent=2))
    assert tracked is not None
    full = str(tracked)
    assert size_of(tracked) == expanded_size(full)  # the budget's running sizes are exact
    try:
        regex = schema_to_regex(schema, SchemaOptions(max_regex_len=budget)).regex
    except GrammarTooLargeError as exc:
        event("refused")
        assert exc.size > budget
        return
    event("fits")
    assert regex == full and expanded_size(regex) <= budget
