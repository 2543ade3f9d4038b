"""The official JSON-Schema-Test-Suite (draft 2020-12) against the translator and a real automaton.

For every case: either the schema is refused with an error naming the keyword, or every invalid
instance's canonical serialization is rejected and every valid one accepted (except the documented
sound restrictions in KNOWN_INCOMPLETE). With ``strict=False`` nothing invalid may pass both the regex
and post-validation with jsonschema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import referencing.exceptions
from jsonschema import Draft202012Validator

from loomlm.grammar.errors import InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.json_schema import SchemaOptions, schema_to_regex

SUITE = Path(__file__).parents[1] / "data" / "json-schema-test-suite" / "draft2020-12"
FILES = sorted(p.name for p in SUITE.glob("*.json"))
LENIENT = SchemaOptions(strict=False)

# Reasons: the documented sound restrictions of grammar/json_schema.py.
NO_EXTRA_KEYS = "properties without additionalProperties: extra keys are not offered"
FORMAT_ASSERTED = "format is asserted, while draft 2020-12 makes it an annotation by default"
DEPTH_BOUND = "any value nests at most ANY_VALUE_DEPTH containers deep"
VOCABULARY = "$vocabulary is not honoured: validation keywords are always enforced"
_FORMATS = ("email", "ipv4", "ipv6", "hostname", "date", "date-time", "time", "uri", "uuid")
# (file, case description, test description) of valid instances the regex knowingly does not produce.
KNOWN_INCOMPLETE: dict[tuple[str, str, str], str] = {
    (
        "additionalProperties.json",
        "additionalProperties are allowed by default",
        "additional properties are allowed",
    ): NO_EXTRA_KEYS,
    ("anyOf.json", "anyOf complex types", "both anyOf valid (complex)"): NO_EXTRA_KEYS,
    ("properties.json", "object properties validation", "doesn't invalidate other properties"): NO_EXTRA_KEYS,
    (
        "uniqueItems.json",
        "uniqueItems=false validation",
        "unique array of nested objects is valid",
    ): DEPTH_BOUND,
    (
        "uniqueItems.json",
        "uniqueItems=false validation",
        "non-unique array of nested objects is valid",
    ): DEPTH_BOUND,
    (
        "vocabulary.json",
        "schema that uses custom metaschema with with no validation vocabulary",
        "no validation: invalid number, but it still validates",
    ): VOCABULARY,
    **{
        (
            "format.json",
            f"{fmt} format",
            f"invalid {fmt} string is only an annotation by default",
        ): FORMAT_ASSERTED
        for fmt in _FORMATS
    },
}


def _cases(name: str) -> list[dict]:
    return json.loads((SUITE / name).read_text())


def _compile(schema: object, options: SchemaOptions) -> tuple[str | None, Exception | None]:
    try:
        return schema_to_regex(schema, options).regex, None
    except (UnsupportedSchemaError, InvalidSchemaError) as exc:
        return None, exc


@pytest.mark.parametrize("name", FILES)
def test_suite_file(name, automaton, canonical, schema_key_order, suite_counts):
    compiled = refused = 0
    for case in _cases(name):
        schema, order = case["schema"], schema_key_order(case["schema"])
        regex, error = _compile(schema, SchemaOptions())
        if error is not None:
            refused += 1
            if isinstance(error, UnsupportedSchemaError):
                assert error.keyword in str(error) and error.keyword, case["description"]
            continue
        compiled += 1
        for test in case["tests"]:
            text = canonical(test["data"], order)
            accepted = automaton.matches(regex, text)
            where = (name, case["description"], test["description"])
            if test["valid"] and where not in KNOWN_INCOMPLETE:
                assert accepted, f"valid instance rejected: {where} {text!r}"
            if not test["valid"]:
                assert not accepted, f"invalid instance accepted: {where} {text!r}"
    suite_counts[name] = (compiled, refused)


@pytest.mark.parametrize("name", FILES)
def test_suite_file_lenient_never_lets_invalid_through(name, automaton, canonical, schema_key_order):
    for case in _cases(name):
        schema = case["schema"]
        if _compile(schema, SchemaOptions())[1] is None:
            continue  # nothing dropped: the strict test covers it
        regex, error = _compile(schema, LENIENT)
        if error is not None:
            assert isinstance(error, InvalidSchemaError), f"strict=False must not refuse: {error}"
            continue
        validator = Draft202012Validator(schema)
        for test in case["tests"]:
            if test["valid"]:
                continue
            text = canonical(test["data"], schema_key_order(schema))
            try:
                post_valid = validator.is_valid(json.loads(text))
            except referencing.exceptions.Unresolvable:
                continue  # a remote document: jsonschema cannot post-validate offline either
            slipped = automaton.matches(regex, text) and post_valid
            assert not slipped, (name, case["description"], test["description"])


def test_known_incomplete_entries_exist():
    """Every documented exception names a real valid test of the suite (no stale entries)."""
    real = {
        (name, case["description"], test["description"])
        for name in FILES
        for case in _cases(name)
        for test in case["tests"]
        if test["valid"]
    }
    assert set(KNOWN_INCOMPLETE) <= real
