"""The schema a model reads in the tools prompt: local references inlined (so an enum behind
``#/$defs/Unit`` shows its values where the property is), recursion kept, size bounded, and the
caller's schema untouched."""

import copy

from loomlm.grammar.prompt_schema import prompt_schema

UNIT = {"enum": ["celsius", "fahrenheit"], "type": "string"}


def test_a_referenced_enum_is_shown_in_place_and_unused_defs_are_dropped():
    schema = {
        "$defs": {"Unit": UNIT},
        "type": "object",
        "properties": {"unit": {"$ref": "#/$defs/Unit", "default": "celsius", "description": "Unit."}},
    }
    before = copy.deepcopy(schema)
    assert prompt_schema(schema) == {
        "type": "object",
        "properties": {"unit": {**UNIT, "default": "celsius", "description": "Unit."}},
    }
    assert schema == before


def test_recursive_references_stay_references_and_keep_their_defs():
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "type": "object",
        "properties": {"head": {"$ref": "#/$defs/Node"}},
    }
    shown = prompt_schema(schema)
    assert shown["properties"]["head"]["properties"]["next"] == {"$ref": "#/$defs/Node"}
    assert shown["$defs"] == schema["$defs"]


def test_references_that_fan_out_past_the_budget_are_shown_as_written():
    defs = {f"D{i}": {"type": "array", "prefixItems": [{"$ref": f"#/$defs/D{i + 1}"}] * 2} for i in range(30)}
    defs["D30"] = {"type": "string"}
    schema = {"$defs": defs, "type": "object", "properties": {"x": {"$ref": "#/$defs/D0"}}}
    assert prompt_schema(schema) is schema  # 2**30 copies: not inlined


def test_unresolvable_and_remote_references_are_left_alone():
    schema = {"properties": {"a": {"$ref": "#/$defs/Missing"}, "b": {"$ref": "https://example.com/s.json"}}}
    assert prompt_schema(schema) == schema
