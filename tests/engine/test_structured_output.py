"""Structured output through the engine, with the tiny random Llama and the real SmolLM2 tokenizer.

Sampled at temperature 1 with many seeds, every output of every schema in the feature matrix parses
and validates; constrained and free requests and different schemas share batches; a constrained
greedy request gives the same tokens alone and in a batch; bad formats fail only their request."""

from __future__ import annotations

import json
import re
from datetime import date
from enum import Enum
from typing import Literal

import pytest
from engine_support import run_requests
from pydantic import BaseModel, Field
from structured_support import FEATURE_MATRIX, SHORT, SMALL_INT, validates

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.compiler import CompilerConfig
from loomlm.grammar.errors import GrammarError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.specs import Choice, Grammar, JsonObject, JsonSchema, Regex


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Pet(BaseModel):
    name: str = Field(max_length=6)
    kind: Literal["cat", "dog"]


class Owner(BaseModel):
    age: int = Field(ge=0, le=120)
    color: Color
    born: date
    pets: list[Pet] = Field(max_length=2)
    nickname: str | None = Field(default=None, max_length=5)


@pytest.fixture(scope="module", params=["auto", "outlines"])
def engine(request, tiny_llama_dir, tmp_path_factory):
    """The same promises hold on every grammar backend: "auto" runs llguidance wherever it enforces
    the spec exactly (most of the matrix) and outlines-core elsewhere; "outlines" runs it alone."""
    engine = LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            scheduler=SchedulerConfig(max_model_len=512, max_num_seqs=64, max_num_batched_tokens=1024),
            cache=CacheConfig(block_size=16, num_blocks=2048),
            grammar=CompilerConfig(cache_dir=tmp_path_factory.mktemp("grammars")),
            grammar_backend=request.param,
        )
    )
    yield engine
    engine.close()


@pytest.mark.parametrize("name", sorted(FEATURE_MATRIX))
def test_every_sampled_output_of_the_feature_matrix_validates(engine, name):
    schema = FEATURE_MATRIX[name]
    requests = {
        f"{name}-{seed}": (
            f"Sample {seed}:",
            SamplingParams(temperature=1.0, seed=seed, max_tokens=400, response_format=schema),
        )
        for seed in range(8)
    }
    outputs = run_requests(engine, requests)
    for request_id, output in outputs.items():
        completion = output.outputs[0]
        assert completion.finish_reason == "stop", (request_id, completion.text, output.error)
        value = json.loads(completion.text)
        assert validates(schema, value), (request_id, completion.text)
        assert completion.parsed == value and completion.parse_error is None


def test_pydantic_model_outputs_are_model_instances(engine):
    requests = {
        f"owner-{seed}": (
            "Owner:",
            SamplingParams(temperature=1.0, seed=seed, max_tokens=400, response_format=Owner),
        )
        for seed in range(8)
    }
    for output in run_requests(engine, requests).values():
        completion = output.outputs[0]
        assert isinstance(completion.parsed, Owner), (completion.text, completion.parse_error)
        assert Owner.model_validate_json(completion.text) == completion.parsed


def test_regex_choice_and_json_object_formats(engine):
    phone = Regex(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}")
    choice = Choice(["yes", "no", "maybe later"])
    requests = {}
    for seed in range(6):
        requests[f"phone-{seed}"] = ("Call", SamplingParams(temperature=1, seed=seed, response_format=phone))
        requests[f"choice-{seed}"] = ("Say", SamplingParams(temperature=1, seed=seed, response_format=choice))
        requests[f"json-{seed}"] = (
            "Any",
            SamplingParams(temperature=1, seed=seed, max_tokens=400, response_format=JsonObject(max_depth=2)),
        )
    outputs = run_requests(engine, requests)
    complete_json = 0
    for request_id, output in outputs.items():
        completion = output.outputs[0]
        if request_id.startswith("json") and completion.finish_reason == "length":
            # Strings inside free JSON are unbounded: a random model may run out of tokens first.
            assert completion.parsed is None and "max_tokens" in completion.parse_error
            continue
        assert completion.finish_reason == "stop", (request_id, completion.text)
        if request_id.startswith("phone"):
            assert re.fullmatch(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}", completion.text)
            assert completion.parsed == completion.text
        elif request_id.startswith("choice"):
            assert completion.parsed in choice.options and completion.text == completion.parsed
        else:
            assert completion.parsed == json.loads(completion.text)
            complete_json += 1
    assert complete_json >= 1


def test_mixed_batch_gives_each_request_what_it_asked_for_and_greedy_is_batch_invariant(engine):
    person = {
        "type": "object",
        "properties": {"name": SHORT, "age": SMALL_INT},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    greedy = SamplingParams(temperature=0, max_tokens=60, response_format=person)
    alone = run_requests(engine, {"alone": ("Extract the person:", greedy)})["alone"].outputs[0]
    batch = {
        "free-0": ("Tell me a story", SamplingParams(temperature=1, seed=1, max_tokens=30)),
        "person": ("Extract the person:", greedy),
        "ints": (
            "Numbers",
            SamplingParams(
                temperature=1, seed=2, max_tokens=100, response_format=FEATURE_MATRIX["integer_bounds"]
            ),
        ),
        "free-1": ("Once upon", SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)),
        "regex": ("Code", SamplingParams(temperature=1, seed=3, response_format=Regex("[a-f]{4}"))),
    }
    outputs = run_requests(engine, batch)
    assert outputs["person"].outputs[0].token_ids == alone.token_ids
    assert validates(person, outputs["person"].outputs[0].parsed)
    assert validates(FEATURE_MATRIX["integer_bounds"], json.loads(outputs["ints"].outputs[0].text))
    assert re.fullmatch("[a-f]{4}", outputs["regex"].outputs[0].text)
    assert len(outputs["free-1"].outputs[0].token_ids) == 20
    for name in ("free-0", "free-1"):
        assert outputs[name].outputs[0].parsed is None and outputs[name].outputs[0].parse_error is None


def test_bad_formats_fail_their_own_request_and_the_batch_runs(engine):
    with pytest.raises(UnsupportedSchemaError, match="'not' at /properties/a"):
        engine.add_request(
            "x", SamplingParams(response_format={"type": "object", "properties": {"a": {"not": {}}}})
        )
    with pytest.raises(InvalidSchemaError, match="minLength"):
        engine.add_request("x", SamplingParams(response_format={"type": "string", "minLength": -1}))
    # A regex that does not parse fails its own request: at intake where the backend checks syntax
    # there (llguidance), else as an error output once its compile fails (outlines-core).
    try:
        engine.add_request("x", SamplingParams(max_tokens=5, response_format=Regex("(unclosed")))
        intake_error = None
    except InvalidRegexError as error:
        intake_error = str(error)
    outputs = run_requests(
        engine,
        {
            "good": ("x", SamplingParams(temperature=0, max_tokens=5, response_format=Choice(["ok"]))),
            "free": ("x", SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)),
        },
    )
    bad = [o for rid, o in outputs.items() if rid not in ("good", "free")]
    if intake_error is not None:
        assert "does not parse" in intake_error and not bad
    else:
        (bad_output,) = bad
        assert bad_output.outputs[0].finish_reason == "error" and "does not parse" in bad_output.error
        assert bad_output.outputs[0].parsed is None
    assert outputs["good"].outputs[0].parsed == "ok"
    assert len(outputs["free"].outputs[0].token_ids) == 5


def test_strict_false_drops_unenforceable_keywords_and_validates_after(engine):
    schema = {"type": "array", "items": SMALL_INT, "minItems": 1, "maxItems": 3, "uniqueItems": True}
    fmt = JsonSchema(schema, strict=False)
    _, prepared = engine.structured_output.resolve(fmt)
    assert any("uniqueItems" in dropped for dropped in prepared.dropped_keywords)
    outputs = run_requests(
        engine,
        {
            f"u-{seed}": ("L", SamplingParams(temperature=1, seed=seed, max_tokens=100, response_format=fmt))
            for seed in range(8)
        },
    )
    for output in outputs.values():
        completion = output.outputs[0]
        value = json.loads(completion.text)
        if len(set(value)) == len(value):
            assert completion.parsed == value
        else:  # the dropped keyword is enforced after generation: no invalid value comes back
            assert (
                completion.parsed is None and "uniqueItems" in completion.parse_error
            ) or "unique" in completion.parse_error


def test_max_tokens_before_completion_gives_no_object(engine):
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 20}
    outputs = run_requests(
        engine, {"short": ("L", SamplingParams(temperature=1, seed=0, max_tokens=5, response_format=schema))}
    )
    completion = outputs["short"].outputs[0]
    assert completion.finish_reason == "length"
    assert completion.parsed is None and "max_tokens=5" in completion.parse_error


def test_compile_timeout_fails_only_that_request(tiny_llama_dir, tmp_path):
    engine = LLMEngine(
        EngineConfig(
            model=str(tiny_llama_dir),
            scheduler=SchedulerConfig(max_model_len=128),
            cache=CacheConfig(block_size=8, num_blocks=64),
            grammar=CompilerConfig(cache_dir=None, timeout_s=0.5),
            grammar_backend="outlines",  # the worker process's time limit (llguidance compiles it lazily)
        )
    )
    try:
        outputs = run_requests(
            engine,
            {
                "slow": ("x", SamplingParams(response_format=Regex("[a-z]*a[a-z]{22}"))),
                "free": ("x", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)),
            },
        )
        assert outputs["slow"].outputs[0].finish_reason == "error"
        assert "longer than 0.5 s" in outputs["slow"].error
        assert len(outputs["free"].outputs[0].token_ids) == 8
        # The engine keeps serving constrained requests after the timeout.
        after = run_requests(
            engine, {"after": ("x", SamplingParams(temperature=0, response_format=Choice(["fine"])))}
        )
        assert after["after"].outputs[0].parsed == "fine"
    finally:
        engine.close()


def test_a_lark_grammar_constrains_generation(engine):
    if engine.config.grammar_backend == "outlines":
        with pytest.raises(GrammarError, match="llguidance"):
            engine.add_request("x", SamplingParams(response_format=Grammar('start: "a"')))
        return
    grammar = Grammar('start: greeting " " name\ngreeting: "hello" | "hi"\nname: /[a-z]{2,5}/')
    requests = {
        f"g-{seed}": ("Say", SamplingParams(temperature=1, seed=seed, max_tokens=20, response_format=grammar))
        for seed in range(6)
    }
    for output in run_requests(engine, requests).values():
        assert re.fullmatch(r"(hello|hi) [a-z]{2,5}", output.outputs[0].text), output.outputs[0].text


def test_a_gbnf_grammar_is_read_like_llama_cpp_does(engine):
    if engine.config.grammar_backend == "outlines":
        return  # refused there, as the Lark test checks
    grammar = Grammar('root ::= "yes" | "no" | digit digit\ndigit ::= [0-9]', syntax="gbnf")
    requests = {
        f"b-{seed}": ("Q", SamplingParams(temperature=1, seed=seed, max_tokens=5, response_format=grammar))
        for seed in range(6)
    }
    for output in run_requests(engine, requests).values():
        assert re.fullmatch(r"yes|no|[0-9]{2}", output.outputs[0].text), output.outputs[0].text
