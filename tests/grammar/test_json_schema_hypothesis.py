"""Property test: random schemas from the supported grammar, each with an instance built for it; the
compiled automaton accepts the instance's canonical text and jsonschema accepts the instance."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from loomlm.grammar.json_schema import schema_to_regex

_NAMES = st.text("abcxyz_", min_size=1, max_size=4)
# Exponents have at most two digits in the number regex (documented), so tiny floats are left out.
_FLOATS = st.floats(-1e6, 1e6).filter(lambda x: x == 0 or abs(x) > 1e-90)
_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters='\U0010ffff"'), max_size=6)


def _scalar() -> st.SearchStrategy:
    """(schema, instance strategy) pairs for scalar schemas."""
    integer = st.tuples(st.integers(-50, 50), st.integers(0, 60)).map(
        lambda b: (
            {"type": "integer", "minimum": b[0], "maximum": b[0] + b[1]},
            st.integers(b[0], b[0] + b[1]),
        )
    )
    string = st.tuples(st.integers(0, 3), st.integers(0, 4)).map(
        lambda b: (
            {"type": "string", "minLength": b[0], "maxLength": b[0] + b[1]},
            _TEXT.filter(lambda s, b=b: b[0] <= len(s) <= sum(b)),
        )
    )
    enum = st.lists(
        st.one_of(st.integers(-5, 5), st.booleans(), st.none(), _TEXT), min_size=1, max_size=4, unique_by=repr
    ).map(lambda vs: ({"enum": vs}, st.sampled_from(vs)))
    const = st.one_of(st.integers(), _TEXT).map(lambda v: ({"const": v}, st.just(v)))
    plain = st.sampled_from(
        [
            ({"type": "boolean"}, st.booleans()),
            ({"type": "null"}, st.none()),
            ({"type": "number"}, _FLOATS),
        ]
    )
    return st.one_of(integer, string, enum, const, plain)


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    array = st.tuples(children, st.integers(0, 2), st.integers(0, 2)).map(
        lambda t: (
            {"type": "array", "items": t[0][0], "minItems": t[1], "maxItems": t[1] + t[2]},
            st.lists(t[0][1], min_size=t[1], max_size=t[1] + t[2]),
        )
    )
    nullable = children.map(lambda c: ({"anyOf": [c[0], {"type": "null"}]}, st.one_of(c[1], st.none())))
    any_of = st.tuples(children, children).map(
        lambda t: ({"anyOf": [t[0][0], t[1][0]]}, st.one_of(t[0][1], t[1][1]))
    )
    obj = st.lists(
        st.tuples(_NAMES, children, st.booleans()), min_size=1, max_size=3, unique_by=lambda p: p[0]
    ).map(_object)
    return st.one_of(array, nullable, any_of, obj)


def _object(props: list) -> tuple[dict, st.SearchStrategy]:
    schema = {
        "type": "object",
        "properties": {name: child[0] for name, child, _ in props},
        "required": [name for name, _, required in props if required],
        "additionalProperties": False,
    }
    members = {name: child[1] for name, child, required in props if required}
    optional = {name: child[1] for name, child, required in props if not required}
    return schema, st.fixed_dictionaries(members, optional=optional)


SCHEMAS = st.recursive(_scalar(), _extend, max_leaves=6)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data(), pair=SCHEMAS)
def test_random_schema_accepts_instances_built_for_it(automaton, canonical, schema_key_order, data, pair):
    schema, instances = pair
    instance = data.draw(instances)
    assert Draft202012Validator(schema).is_valid(instance)
    regex = schema_to_regex(schema).regex
    assert automaton.matches(regex, canonical(instance, schema_key_order(schema)))
