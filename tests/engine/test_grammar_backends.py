"""Grammar backends through the engine: real-world schemas that broke the regex path compile and
generate valid output under ``auto``; pathological ones fail their own request in bounded time and
memory while the batch finishes; ``auto`` picks llguidance and falls back to outlines-core."""

from __future__ import annotations

import json

import pytest
from engine_support import run_requests
from jsonschema import Draft202012Validator

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.compiler import CompilerConfig
from loomlm.grammar.errors import GrammarError, UnsupportedSchemaError
from loomlm.grammar.specs import JsonSchema, resolve_response_format


def crd_schema() -> dict:
    """The shape of Kubernetes' JSONSchemaProps: one definition that refers back to itself through
    twenty properties (directly, as array items, as map values and inside anyOf)."""
    ref = {"$ref": "#/$defs/props"}
    shapes = [ref, {"type": "array", "items": ref}, {"type": "object", "additionalProperties": ref}]
    shapes.append({"anyOf": [ref, {"type": "boolean"}]})
    props = {f"p{i}": shapes[i % 4] for i in range(20)}
    props |= {"type": {"type": "string", "maxLength": 8}, "description": {"type": "string", "maxLength": 12}}
    return {"$defs": {"props": {"type": "object", "properties": props}}, "$ref": "#/$defs/props"}


def wide_array_schema() -> dict:
    fields = {f"f{i}": {"type": "string", "maxLength": 3} for i in range(30)}
    item = {"type": "object", "properties": fields, "required": list(fields), "additionalProperties": False}
    return {"type": "array", "items": item, "maxItems": 200}


def nested_schema(levels: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(levels):  # two references to the same child per level: exponential as JSON
        schema = {"anyOf": [{"type": "array", "items": schema}, {"properties": {"a": schema, "b": schema}}]}
    return schema


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    engine = LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            scheduler=SchedulerConfig(max_model_len=1024, max_num_seqs=32, max_num_batched_tokens=1024),
            cache=CacheConfig(block_size=16, num_blocks=1024),
            grammar=CompilerConfig(cache_dir=None, timeout_s=5),
        )
    )
    yield engine
    engine.close()


def validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


VALID_INSTANCES = {
    # Properties in the schema's order (both backends write keys in that order).
    "crd": {"p0": {"p1": [{"p2": {"k": {}}}], "p3": True}, "p3": False, "type": "object", "description": "x"},
    "max_items_200": [{f"f{i}": "ab" for i in range(30)}] * 3,
}


@pytest.mark.parametrize("schema_of", [crd_schema, wide_array_schema], ids=["crd", "max_items_200"])
def test_schemas_that_broke_the_regex_path_compile_and_generate_valid_output(engine, tokenizer, schema_of):
    schema = schema_of()
    _, prepared = engine.structured_output.resolve(schema)
    assert prepared.backend == "llguidance"
    # The grammar takes a valid instance, token by token as the model would write it, and ends there.
    compiled = engine.structured_output.backends["llguidance"].submit(prepared).result(timeout=60)
    state = engine.structured_output.backends["llguidance"].new_state(compiled)
    instance = VALID_INSTANCES[
        schema_of.__name__.replace("_schema", "").replace("wide_array", "max_items_200")
    ]
    for token_id in tokenizer.encode(json.dumps(instance, separators=(",", ":")), add_special_tokens=False):
        assert state.accept_token(token_id)
    assert state.is_accepting()
    # Sampled at temperature 1: every finished output validates; none is a half object.
    params = [SamplingParams(temperature=1, seed=s, max_tokens=160, response_format=schema) for s in range(3)]
    outputs = run_requests(engine, {f"s{i}": ("Spec:", p) for i, p in enumerate(params)})
    for output in outputs.values():
        completion = output.outputs[0]
        if completion.finish_reason == "stop":
            assert validator(schema).is_valid(json.loads(completion.text)), completion.text
            assert completion.parsed is not None
        else:  # a random model may run out of tokens inside a deep value
            assert completion.finish_reason == "length" and completion.parsed is None


def test_the_outlines_backend_refuses_the_crd_schema_fast_by_its_size_budget(tiny_llama_dir):
    engine = LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            scheduler=SchedulerConfig(max_model_len=128),
            cache=CacheConfig(block_size=8, num_blocks=64),
            grammar=CompilerConfig(cache_dir=None),
            grammar_backend="outlines",
        )
    )
    try:
        with pytest.raises(GrammarError, match=r"regex size .* over the limit"):
            engine.add_request("x", SamplingParams(response_format=crd_schema()))
        after = run_requests(engine, {"after": ("x", SamplingParams(max_tokens=3, ignore_eos=True))})
        assert after["after"].finished
    finally:
        engine.close()


def test_a_pathological_schema_fails_its_own_request_and_the_batch_finishes(engine):
    # Refused at intake, in milliseconds and without building anything large: 2**15 paths as JSON,
    # 5000 levels deep, a dangling reference.
    deep: dict = {"type": "integer"}
    for _ in range(5000):
        deep = {"type": "array", "items": deep}
    for bad, error in [
        (nested_schema(15), "size in nodes"),
        (deep, "nesting depth"),
        ({"type": "array", "items": {"$ref": "#/$defs/missing"}}, "missing"),
    ]:
        with pytest.raises(GrammarError, match=error):
            engine.add_request("x", SamplingParams(response_format=bad))
    outputs = run_requests(
        engine,
        {
            "free": ("Hello", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)),
            "json": ("Hi", SamplingParams(temperature=0, max_tokens=40, response_format={"type": "boolean"})),
        },
    )
    assert len(outputs["free"].outputs[0].token_ids) == 4
    assert outputs["json"].outputs[0].parsed in (True, False)


def test_auto_falls_back_to_outlines_where_llguidance_is_not_exact(engine):
    # llguidance approximates format "date" (29 February of any year); our translator is exact.
    schema = {"type": "string", "format": "date"}
    with pytest.raises(UnsupportedSchemaError, match="format"):
        engine.structured_output.backends["llguidance"].prepare(resolve_response_format(schema))
    _, prepared = engine.structured_output.resolve(schema)
    assert prepared.backend == "outlines"
    outputs = run_requests(
        engine, {"d": ("Date:", SamplingParams(temperature=1, seed=0, response_format=schema))}
    )
    assert validator(schema).is_valid(outputs["d"].outputs[0].parsed)


def test_strict_false_lists_dropped_keywords_and_validates_after(engine):
    schema = {"type": "array", "items": {"enum": [1, 2, 3]}, "maxItems": 3, "uniqueItems": True}
    _, prepared = engine.structured_output.resolve(JsonSchema(schema, strict=False))
    assert any(d.startswith("uniqueItems") for d in prepared.dropped_keywords)
