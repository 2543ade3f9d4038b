"""grammar/llg_schema.py: which keywords reach llguidance, how refusals are named, what strict=False
drops, and that what is passed on really constrains a matcher over the SmolLM2 vocabulary."""

from __future__ import annotations

import json
import time

import pytest
from llg_schema_cases import ENFORCED, OVERLAP, REFUSED
from llguidance import LLMatcher

from loomlm.grammar.errors import InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.llg_schema import llg_json_options, prepare_llg_schema


@pytest.fixture(scope="module")
def llg_tokenizer(tokenizer):
    from llguidance.hf import from_tokenizer

    return from_tokenizer(tokenizer)


@pytest.fixture(scope="module")
def accepts(tokenizer, llg_tokenizer):
    """``(grammar, text) -> bool``: the matcher consumes the text's tokens and ends accepting."""

    def run(grammar: str, text: str) -> bool:
        matcher = LLMatcher(llg_tokenizer, grammar, log_level=0)
        assert not matcher.is_error(), matcher.get_error()
        ids = tokenizer.encode(text, add_special_tokens=False)
        return (
            matcher.validate_tokens(ids) == len(ids)
            and matcher.consume_tokens(ids)
            and matcher.is_accepting()
        )

    return run


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(("schema", "keyword", "pointer"), REFUSED)
def test_strict_refusal_names_keyword_and_pointer(schema, keyword, pointer):
    with pytest.raises(UnsupportedSchemaError) as info:
        prepare_llg_schema(schema, strict=True)
    assert (info.value.keyword, info.value.pointer) == (keyword, pointer)
    assert repr(keyword) in str(info.value) and pointer in str(info.value)


@pytest.mark.parametrize(("schema", "keyword", "pointer"), REFUSED)
def test_lenient_drops_and_lists(schema, keyword, pointer):
    prepared = prepare_llg_schema(schema, strict=False)
    assert (keyword, pointer) in prepared.dropped
    assert not LLMatcher.validate_grammar(prepared.grammar_json)


def test_lenient_lists_every_dropped_keyword_once_and_loosens_only_those(accepts):
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "n": {"type": "integer", "not": {"const": 3}},
            "v": {"oneOf": OVERLAP},
        },
        "required": ["tags", "n", "v"],
        "additionalProperties": False,
    }
    prepared = prepare_llg_schema(schema, strict=False)
    assert prepared.dropped == (
        ("uniqueItems", "/properties/tags/uniqueItems"),
        ("not", "/properties/n/not"),
        ("oneOf", "/properties/v/oneOf"),
    )
    grammar = prepared.grammar_json
    assert accepts(grammar, '{"tags":["a","a"],"n":3,"v":2}')  # the dropped keywords no longer bind
    assert not accepts(grammar, '{"tags":["a",1],"n":3,"v":2}')  # items still does
    assert not accepts(grammar, '{"tags":[],"n":1.5,"v":2}')  # type integer still does
    assert not accepts(grammar, '{"tags":[],"n":3,"v":0.5}')  # oneOf relaxed to anyOf, not removed
    assert not accepts(grammar, '{"tags":[],"n":3,"v":2,"extra":1}')


def test_lenient_pointers_name_the_users_document_after_a_relaxed_oneof():
    schema = {"properties": {"v": {"oneOf": [{"oneOf": OVERLAP}, {"type": "string"}]}}}
    with pytest.raises(UnsupportedSchemaError, match="oneOf"):
        prepare_llg_schema(schema)
    dropped = prepare_llg_schema(schema, strict=False).dropped
    assert set(dropped) == {("oneOf", "/properties/v/oneOf"), ("oneOf", "/properties/v/oneOf/0/oneOf")}


def test_no_ops_of_draft_2020_12_are_removed_silently(accepts):
    schema = {
        "type": "array",
        "uniqueItems": False,
        "if": {"minItems": 1},  # no then/else: an annotation only
        "minContains": 2,  # no contains: ignored
        "unevaluatedItems": True,
        "dependencies": {"a": ["b"]},  # not a 2020-12 keyword
        "items": {"type": "integer", "format": "int32"},  # not a 2020-12 format
    }
    prepared = prepare_llg_schema(schema, strict=True)
    assert prepared.dropped == ()
    assert accepts(prepared.grammar_json, "[1,1]")
    assert not accepts(prepared.grammar_json, '["a"]')


def test_unevaluated_without_applicators_becomes_additional(accepts):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "unevaluatedProperties": False}
    grammar = prepare_llg_schema(schema).grammar_json
    assert accepts(grammar, '{"a":1}')
    assert not accepts(grammar, '{"a":1,"b":2}')
    items = prepare_llg_schema({"prefixItems": [{"type": "string"}], "unevaluatedItems": False}).grammar_json
    assert accepts(items, '["x"]') and not accepts(items, '["x",1]')


def test_recursive_schema_walk_terminates_and_reports_once():
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "uniqueItems": True},
                    "parent": {"$ref": "#"},
                },
            }
        },
        "$ref": "#/$defs/node",
    }
    with pytest.raises(UnsupportedSchemaError) as info:
        prepare_llg_schema(tree)
    assert info.value.pointer == "/$defs/node/properties/children/uniqueItems"
    prepared = prepare_llg_schema(tree, strict=False)
    assert prepared.dropped == (("uniqueItems", "/$defs/node/properties/children/uniqueItems"),)


def test_long_reference_chains_are_walked_once():
    defs = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{max(i - 1, 0)}"}]}
        for i in range(300)
    }
    defs["d300"] = {"type": "integer", "not": {"const": 0}}
    start = time.perf_counter()
    prepared = prepare_llg_schema({"$defs": defs, "$ref": "#/$defs/d0"}, strict=False)
    assert prepared.dropped == (("not", "/$defs/d300/not"),)
    assert time.perf_counter() - start < 10


def test_refs_into_unknown_keywords_are_checked():
    with pytest.raises(UnsupportedSchemaError) as info:
        prepare_llg_schema({"x-library": {"n": {"not": {}}}, "$ref": "#/x-library/n"})
    assert info.value.pointer == "/x-library/n/not"


def test_x_guidance_cannot_loosen_the_options():
    schema = {"x-guidance": {"coerce_one_of": True, "lenient": True}, "oneOf": OVERLAP}
    with pytest.raises(UnsupportedSchemaError, match="oneOf"):
        prepare_llg_schema(schema)


@pytest.mark.parametrize(
    "schema",
    [
        False,
        {"type": "nonsense"},
        {"minimum": "1"},
        {"required": ["x"], "type": "object", "properties": {"x": False}},
    ],
)
def test_invalid_or_unsatisfiable_schemas(schema):
    with pytest.raises(InvalidSchemaError):
        prepare_llg_schema(schema)


def test_whitespace_options():
    assert llg_json_options("compact") == {
        "lenient": False,
        "coerce_one_of": False,
        "item_separator": ",",
        "key_separator": ":",
        "whitespace_flexible": False,
        "json_allowed_escapes": '"\\bfnrt',
        "json_allow_general_unicode_escapes": False,
    }
    pretty = llg_json_options("pretty", indent=4)
    assert pretty["key_separator"] == ": " and pretty["item_separator"] == ","
    assert pretty["whitespace_pattern"] == "\\n(?: {4})*"
    with pytest.raises(ValueError):
        llg_json_options("spacious")
    with pytest.raises(ValueError):
        llg_json_options("pretty", indent=-1)


def test_whitespace_compact_is_exact_and_pretty_covers_json_dumps(accepts):
    schema = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}}, "b": {"type": "object"}},
        "required": ["a", "b"],
    }
    value = {"a": [1, 2], "b": {"c": None}}
    compact_grammar = prepare_llg_schema(schema).grammar_json
    assert accepts(compact_grammar, compact(value))
    assert not accepts(compact_grammar, json.dumps(value))
    assert not accepts(compact_grammar, json.dumps(value, indent=2))
    pretty2 = prepare_llg_schema(schema, whitespace="pretty", indent=2).grammar_json
    assert accepts(pretty2, json.dumps(value, indent=2))
    assert not accepts(pretty2, json.dumps(value, indent=3))  # indentation in steps of `indent`
    assert not accepts(pretty2, compact(value))  # ": " after keys
    assert accepts(pretty2, '{"a": [1,2],"b": {"c": null}}')  # approximate: newlines are optional
    pretty4 = prepare_llg_schema(schema, whitespace="pretty", indent=4).grammar_json
    assert accepts(pretty4, json.dumps(value, indent=4))


@pytest.mark.parametrize(("schema", "valid", "invalid"), ENFORCED)
def test_enforced_keyword_constrains_the_matcher(schema, valid, invalid, accepts):
    prepared = prepare_llg_schema(schema, strict=True)
    assert prepared.dropped == ()
    assert accepts(prepared.grammar_json, compact(valid))
    assert not accepts(prepared.grammar_json, compact(invalid))


def test_extra_keys_cannot_alias_declared_ones(accepts):
    # llguidance's extra-key lexeme would accept "\u0061" (= "a") with a value breaking "a"'s schema.
    grammar = prepare_llg_schema({"type": "object", "properties": {"a": {"type": "integer"}}}).grammar_json
    assert accepts(grammar, '{"a":1,"b":"x"}')
    assert not accepts(grammar, '{"\\u0061":"x"}')


def test_true_schema_is_any_json_value(accepts):
    grammar = prepare_llg_schema(True).grammar_json
    for text in ("1", '"x"', "null", '{"a":[1,{"b":[true,null]}]}'):
        assert accepts(grammar, text)
    assert not accepts(grammar, "{a}")


def test_deep_nesting_is_refused_not_a_recursion_error():
    schema: dict = {"type": "integer"}
    for _ in range(3000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidSchemaError, match="nested too deeply"):
        prepare_llg_schema(schema)
