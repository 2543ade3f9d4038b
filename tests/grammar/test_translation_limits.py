"""The JSON Schema translator is bounded: a regex budget checked as the regex grows, a bound on the
translator's own nesting and on the schema document, each failing with GrammarTooLargeError (a
GrammarCompileError) that names the limit, the size reached, the JSON Pointer and what to do.

Time and memory bounds here are generous on purpose (seconds, hundreds of MB): they do not measure
speed, they prove "bounded" where the unbounded translator took seconds to minutes and gigabytes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
import tracemalloc

import pytest

from loomlm.grammar import json_schema
from loomlm.grammar.compiler import CompilerConfig
from loomlm.grammar.errors import GrammarCompileError, GrammarError, GrammarTooLargeError
from loomlm.grammar.json_schema import SchemaOptions, json_value_regex, schema_to_regex
from loomlm.grammar.schema_budget import expanded_size
from loomlm.grammar.schema_limits import MAX_SCHEMA_DEPTH

# Python-level allocations of one refused translation; the unbounded translator reached gigabytes.
PEAK_BYTES = 200 << 20
# Wall-clock bound for a refusal that takes milliseconds; the unbounded paths took 4 s to minutes.
FAST_S = 10.0


def crd_schema() -> dict:
    """Like Kubernetes' JSONSchemaProps: one definition whose 20 properties refer back to it."""
    ref = {"$ref": "#/$defs/props"}
    ref_list = {"type": "array", "items": ref}
    ref_map = {"type": "object", "additionalProperties": ref}
    ref_or_bool = {"anyOf": [{"type": "boolean"}, ref]}
    names_or_ref = {"anyOf": [ref, {"type": "array", "items": {"type": "string"}}]}
    properties = {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "description": {"type": "string"},
        "properties": ref_map,
        "patternProperties": ref_map,
        "definitions": ref_map,
        "items": {"anyOf": [ref, ref_list]},
        "allOf": ref_list,
        "anyOf": ref_list,
        "oneOf": ref_list,
        "not": ref,
        "additionalProperties": ref_or_bool,
        "additionalItems": ref_or_bool,
        "dependencies": {"type": "object", "additionalProperties": names_or_ref},
        "default": ref,
        "example": ref,
        "enum": ref_list,
        "x-kubernetes-embedded": ref,
        "x-kubernetes-list": ref_list,
        "x-kubernetes-map": ref_map,
    }
    return {"$defs": {"props": {"type": "object", "properties": properties}}, "$ref": "#/$defs/props"}


def wide_objects(max_items: int) -> dict:
    props = {f"field_{i:02d}": {"type": "string"} for i in range(30)}
    item = {"type": "object", "properties": props, "required": list(props)}
    return {"type": "array", "maxItems": max_items, "items": item}


def translate_measured(schema: object, options: SchemaOptions | None = None):
    """(result or raised exception, seconds, peak bytes of Python allocations)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        outcome = schema_to_regex(schema, options or SchemaOptions())
    except Exception as exc:
        outcome = exc
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return outcome, elapsed, peak


# The CRD case runs in a child process whose address space is capped (1 GiB above what the imports
# took): if the budget ever regressed, the child fails with MemoryError instead of taking the machine
# (the unbounded translator grew a serving process to 23 GB).
_CAPPED_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from loomlm.grammar.json_schema import schema_to_regex
    from loomlm.grammar.errors import GrammarTooLargeError
    schema = json.loads(sys.stdin.read())
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = vm + (1 << 30) if hard == resource.RLIM_INFINITY else min(vm + (1 << 30), hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        schema_to_regex(schema)
        error = None
    except GrammarTooLargeError as exc:
        error = {"message": str(exc), "pointer": exc.pointer, "size": exc.size, "limit": exc.limit}
    except MemoryError:
        error = {"message": "MemoryError"}
    elapsed = time.perf_counter() - start
    rss_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    print(json.dumps({"error": error, "seconds": elapsed, "rss_growth_kb": rss_growth_kb}))
    """
)


def test_crd_style_recursive_schema_fails_fast_naming_a_pointer_with_bounded_memory():
    child = subprocess.run(
        [sys.executable, "-c", _CAPPED_CHILD],
        input=json.dumps(crd_schema()),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(child.stdout.strip().splitlines()[-1])
    error = report["error"]
    assert error is not None and error["message"] != "MemoryError", report
    assert error["limit"] == 200_000 and error["size"] > error["limit"]
    assert error["pointer"].startswith("/$defs/props/properties/")
    for words in ("200000", error["pointer"], "max_regex_len", "max_recursion_depth", "llguidance"):
        assert words in error["message"]
    assert report["seconds"] < FAST_S
    assert report["rss_growth_kb"] < PEAK_BYTES // 1024


def test_crd_style_schema_translates_when_recursion_is_not_unrolled():
    regex = schema_to_regex(crd_schema(), SchemaOptions(max_recursion_depth=0)).regex
    assert len(regex) < 200_000


def test_bounded_repetition_of_large_objects_is_refused_in_milliseconds():
    # Its text is only 7 kB, but the automaton builder expands 200 copies of a 3.6 kB object.
    outcome, elapsed, peak = translate_measured(wide_objects(200))
    assert isinstance(outcome, GrammarTooLargeError)
    assert outcome.pointer == "" and outcome.size > 200 * 3_000 and outcome.limit == 200_000
    assert "counted repetitions expanded" in str(outcome) and "maxItems" in str(outcome)
    assert elapsed < FAST_S and peak < PEAK_BYTES


def test_repetitions_weigh_their_copies_not_their_text():
    few = schema_to_regex(wide_objects(5)).regex
    assert len(few) < 10_000 and expanded_size(few) < 200_000
    strings = {"type": "array", "items": {"type": "string", "maxLength": 400}}  # 400 x 138 = 55 kB
    assert len(schema_to_regex({**strings, "maxItems": 3}).regex) < 300
    with pytest.raises(GrammarTooLargeError, match="counted repetitions"):
        schema_to_regex({**strings, "maxItems": 5})  # 5 x 55 kB, though the text is 300 characters
    with pytest.raises(GrammarTooLargeError, match=r"at /, over the limit of 200000"):
        schema_to_regex({"type": "string", "maxLength": 10**9})


@pytest.mark.parametrize(
    "keyword",
    ["items", "properties", "allOf", "anyOf"],
)
def test_5000_levels_of_nesting_fail_clearly_without_recursion_error(keyword):
    schema: dict = {"type": "integer"}
    for _ in range(5000):
        if keyword == "items":
            schema = {"type": "array", "items": schema}
        elif keyword == "properties":
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        else:
            schema = {keyword: [schema]}
    outcome, elapsed, peak = translate_measured(schema)
    assert isinstance(outcome, GrammarTooLargeError), outcome
    assert "nesting depth" in str(outcome) and f"over the limit of {MAX_SCHEMA_DEPTH}" in str(outcome)
    assert outcome.pointer.startswith("/" + keyword)
    assert elapsed < FAST_S and peak < PEAK_BYTES


def test_nesting_just_inside_the_document_limit_translates():
    schema: dict = {"type": "integer"}
    for _ in range(MAX_SCHEMA_DEPTH // 2 - 1):  # properties take two levels per schema
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    assert schema_to_regex(schema).regex.count('"a"') == MAX_SCHEMA_DEPTH // 2 - 1


def test_a_long_ref_chain_stops_at_the_translation_depth():
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(3000)}
    defs["d3000"] = {"type": "integer"}
    with pytest.raises(GrammarTooLargeError, match=r"translation's nesting .* over the limit of 100"):
        schema_to_regex({"$defs": defs, "$ref": "#/$defs/d0"})


def test_a_recursive_schema_at_the_highest_recursion_depth_still_translates():
    linked = {"type": "object", "properties": {"next": {"$ref": "#"}, "v": {"type": "integer"}}}
    regex = schema_to_regex(linked, SchemaOptions(max_recursion_depth=16)).regex
    assert re.fullmatch(regex, '{"next":' * 17 + "{}" + "}" * 17)
    assert not re.fullmatch(regex, '{"next":' * 18 + "{}" + "}" * 18)


def test_patterns_cannot_nest_or_repeat_past_the_limits():
    with pytest.raises(GrammarTooLargeError, match="nesting reached 65 at /pattern, over the limit of 64"):
        schema_to_regex({"type": "string", "pattern": "(" * 1000 + "a" + ")" * 1000})
    nested = {"type": "string", "pattern": "^(?:(?:a{1000}){1000})$"}
    with pytest.raises(GrammarTooLargeError, match="counted repetitions"):
        schema_to_regex(nested, SchemaOptions(strict=False))  # too large is never "dropped"


def test_a_long_property_name_needs_no_deep_recursion():
    def schema(name: str) -> dict:
        return {"type": "object", "properties": {name: {"type": "integer"}}, "additionalProperties": True}

    # A trie 900 nodes deep: the recursive builder needed 900 frames (Python's re cannot even read
    # the result; outlines-core can), the iterative one none.
    assert len(schema_to_regex(schema("n" * 900)).regex) < 200_000
    name = "n" * 200
    regex = schema_to_regex(schema(name)).regex
    assert re.fullmatch(regex, f'{{"{name}":1,"{name[:-1]}":[2],"{name}x":3}}')
    assert not re.fullmatch(regex, f'{{"{name}":1,"{name}":2}}')  # the declared name is no extra key


def test_an_oversize_schema_is_refused_before_translation(monkeypatch):
    class Untouchable:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the schema was read past the size check")

        check_schema = __init__

    monkeypatch.setattr(json_schema, "Draft202012Validator", Untouchable)
    monkeypatch.setattr(json_schema, "SchemaTranslator", Untouchable)
    many_nodes = {"enum": list(range(1_000_000))}
    one_long_string = {"type": "string", "description": "x" * (50 << 20)}  # a 50 MB schema
    for schema, pointer in ((many_nodes, "/enum"), (one_long_string, "/description")):
        start = time.perf_counter()
        with pytest.raises(GrammarTooLargeError, match="refused before translation") as caught:
            schema_to_regex(schema)
        assert caught.value.pointer == pointer and caught.value.limit == 100_000
        assert "max_schema_nodes" in str(caught.value)
        assert time.perf_counter() - start < FAST_S
    with pytest.raises(GrammarTooLargeError):
        json_schema.check_schema_size(many_nodes)


def test_the_budget_is_an_option_and_defaults_to_the_compilers_limit():
    assert SchemaOptions().max_regex_len == CompilerConfig().max_regex_len == 200_000
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    with pytest.raises(GrammarTooLargeError) as caught:
        schema_to_regex(schema, SchemaOptions(max_regex_len=20))
    error = caught.value
    assert isinstance(error, GrammarCompileError) and isinstance(error, GrammarError)
    assert error.limit == 20 and error.size > 20 and "over the limit of 20;" in str(error)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_regex_len"):
            SchemaOptions(max_regex_len=bad)


def test_json_value_regex_is_budgeted_too():
    assert len(json_value_regex(4)) < 200_000
    with pytest.raises(GrammarTooLargeError, match="lower max_depth"):
        json_value_regex(5)


def test_under_budget_translation_is_the_same_with_any_budget():
    schemas = [
        wide_objects(5),
        crd_schema() | {"$defs": {"props": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        {"type": "string", "pattern": "^[a-z]{2,8}(?:-[0-9]+)?$"},
        {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(40)}},
    ]
    for schema in schemas:
        small = schema_to_regex(schema).regex
        assert type(small) is str
        assert small == schema_to_regex(schema, SchemaOptions(max_regex_len=10**12)).regex
