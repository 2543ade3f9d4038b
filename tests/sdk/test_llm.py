"""LLM.generate / LLM.chat on a tiny random Llama with the real SmolLM2 tokenizer: input forms,
output order and shapes, sampling options end to end, and bad input failing only its request."""

import logging

import jsonschema
import pydantic
import pytest

from loomlm import (
    LLM,
    AdapterError,
    GrammarError,
    InvalidPromptError,
    PromptTooLongError,
    RequestError,
    SamplingParams,
)

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_llama_dir):
    return LLM(str(tiny_llama_dir), max_model_len=256, block_size=8, max_num_batched_tokens=64)


def test_accepts_a_string_a_list_and_token_ids_and_keeps_input_order(llm):
    texts = ["Hello there", "A much longer prompt about the weather in spring", "x"]
    batch = llm.generate(texts, GREEDY)
    assert [o.prompt for o in batch] == texts
    singles = [llm.generate(t, GREEDY)[0] for t in texts]
    assert [o.outputs[0].token_ids for o in batch] == [o.outputs[0].token_ids for o in singles]
    ids = llm.tokenizer("Hello there").input_ids
    by_ids = llm.generate(ids, GREEDY)
    assert len(by_ids) == 1 and by_ids[0].prompt_token_ids == ids
    assert by_ids[0].outputs[0].token_ids == batch[0].outputs[0].token_ids
    assert len(llm.generate([ids, ids], GREEDY)) == 2


def test_output_shape_text_and_finish_reason(llm):
    (output,) = llm.generate("Hello there", GREEDY)
    completion = output.outputs[0]
    assert output.finished and len(completion.token_ids) == 8
    assert completion.finish_reason == "length"
    assert completion.text == llm.tokenizer.decode(completion.token_ids, skip_special_tokens=True)


def test_one_sampling_params_per_prompt(llm):
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (2, 5)]
    outputs = llm.generate(["a", "b"], params)
    assert [len(o.outputs[0].token_ids) for o in outputs] == [2, 5]
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        llm.generate(["a", "b", "c"], params)


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -1},
        {"top_p": 0},
        {"top_k": -3},
        {"max_tokens": 0},
        {"n": 0},
        {"min_tokens": 9, "max_tokens": 3},
        {"stop": [""]},
        {"unknown_option": 1},
    ],
)
def test_bad_sampling_params_raise_before_anything_runs(bad):
    with pytest.raises(pydantic.ValidationError):
        SamplingParams(**bad)


def test_a_prompt_longer_than_the_context_fails_alone(llm):
    too_long = list(range(100, 400))  # 300 tokens > max_model_len 256
    outputs = llm.generate(["fine", too_long, "also fine"], GREEDY)
    assert outputs[1].error is not None and "max_model_len" in outputs[1].error
    assert outputs[1].outputs[0].finish_reason == "error"
    assert [len(outputs[i].outputs[0].token_ids) for i in (0, 2)] == [8, 8]
    assert outputs[0].error is None and outputs[2].error is None
    # The engine keeps serving afterwards.
    assert len(llm.generate("again", GREEDY)[0].outputs[0].token_ids) == 8


def test_empty_prompt_and_out_of_range_token_ids_fail_alone(llm):
    outputs = llm.generate(["", [5, 10**7], "ok"], GREEDY)
    assert "empty" in outputs[0].error
    assert "out of range" in outputs[1].error
    assert outputs[2].error is None


def test_n_completions_are_distinct_and_seeded_reproducible(llm):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=7, ignore_eos=True)
    (first,) = llm.generate("Tell me a story", params)
    (second,) = llm.generate("Tell me a story", params)
    assert [c.index for c in first.outputs] == [0, 1, 2]
    tokens = [c.token_ids for c in first.outputs]
    assert len({tuple(t) for t in tokens}) == 3
    assert tokens == [c.token_ids for c in second.outputs]


def test_seeded_request_is_the_same_alone_and_in_a_busy_batch(llm):
    seeded = SamplingParams(temperature=0.9, top_p=0.95, max_tokens=10, seed=123, ignore_eos=True)
    (alone,) = llm.generate("The weather today", seeded)
    noisy = SamplingParams(temperature=1.0, max_tokens=6, ignore_eos=True)
    batch = llm.generate(["Other prompt", "The weather today", "Third one here"], [noisy, seeded, noisy])
    assert batch[1].outputs[0].token_ids == alone.outputs[0].token_ids


def test_logprobs_hold_the_top_n_and_the_sampled_token(llm):
    params = SamplingParams(temperature=0, max_tokens=4, logprobs=3, ignore_eos=True)
    completion = llm.generate("Hello", params)[0].outputs[0]
    assert len(completion.logprobs) == 4
    for token, step in zip(completion.token_ids, completion.logprobs, strict=True):
        assert token in step and step[token].rank == 1  # greedy picks the top token
        assert len(step) == 3
        assert all(lp.logprob <= 0 and lp.decoded_token is not None for lp in step.values())
    assert completion.cumulative_logprob == pytest.approx(
        sum(step[t].logprob for t, step in zip(completion.token_ids, completion.logprobs, strict=True))
    )


def test_stop_string_truncates_text_and_reports_the_reason(llm):
    free = llm.generate("Hello there", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    text = free.outputs[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), "the tiny model's text should have content to stop on"
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop])
    completion = llm.generate("Hello there", params)[0].outputs[0]
    assert completion.finish_reason == "stop" and completion.stop_reason == stop
    assert completion.text == text[: text.index(stop)]


def test_stop_token_ids_end_generation(llm):
    free = llm.generate("Hello there", GREEDY)[0].outputs[0].token_ids
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, stop_token_ids=[free[2]])
    completion = llm.generate("Hello there", params)[0].outputs[0]
    assert completion.token_ids == free[: free.index(free[2]) + 1]
    assert completion.finish_reason == "stop" and completion.stop_reason == free[2]


def test_chat_applies_the_chat_template(llm):
    conversation = [{"role": "user", "content": "Hi!"}]
    (output,) = llm.chat(conversation, GREEDY)
    expected = llm.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert llm.tokenizer.decode(output.prompt_token_ids) == expected
    assert len(llm.chat([conversation, conversation], GREEDY)) == 2


def test_priority_list_must_match_prompts(llm):
    with pytest.raises(ValueError, match="priorities"):
        llm.generate(["a", "b"], GREEDY, priority=[1])


@pytest.mark.parametrize(
    ("bad_ids", "why"),
    [([], "no tokens"), ([5, 49152], "out of range"), ([5, -1], "out of range"), ([5, 2.5], "integers")],
)
def test_prompt_token_ids_are_checked_like_text_prompts(llm, bad_ids, why):
    # Token ids given directly (generate([...ids])) and through the engine's prompt_token_ids= path.
    outputs = llm.generate([bad_ids, "ok"], GREEDY)
    assert why in outputs[0].error and outputs[0].outputs[0].finish_reason == "error"
    assert outputs[1].error is None
    with pytest.raises(InvalidPromptError, match=why):
        llm.engine.add_request("ignored text", GREEDY, prompt_token_ids=bad_ids)


def test_an_internal_error_is_raised_not_turned_into_an_output(llm, monkeypatch):
    # Only RequestErrors become per-prompt errors; a bug (even a ValueError) reaches the caller.
    def broken(*args, **kwargs):
        raise ValueError("internal bug")

    monkeypatch.setattr(llm.engine.processor, "make_requests", broken)
    with pytest.raises(ValueError, match="internal bug"):
        llm.generate(["fine"], GREEDY)


def test_request_errors_are_one_family(llm):
    outputs = llm.generate([list(range(100, 400))], GREEDY)
    assert outputs[0].error is not None
    assert issubclass(PromptTooLongError, RequestError) and issubclass(InvalidPromptError, RequestError)
    assert issubclass(AdapterError, RequestError) and issubclass(GrammarError, RequestError)


def test_the_engine_logs_through_standard_logging(tiny_llama_dir, caplog):
    with caplog.at_level(logging.INFO, logger="loomlm"):
        LLM(str(tiny_llama_dir), max_model_len=64, num_kv_blocks=4, block_size=8, max_num_seqs=2).generate(
            ["one two three four five", "six seven eight nine"],
            SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
        )
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("loaded ") for m in messages)
    assert any(m.startswith("KV cache: 4 blocks of 8 tokens") for m in messages)
    assert any(m.startswith("preempted request") for m in messages)  # 4 blocks cannot hold both


def test_the_package_is_quiet_by_default():
    handlers = logging.getLogger("loomlm").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_extract_takes_a_json_schema_dict_as_well_as_a_type(llm):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    value = llm.extract(schema, "Ann is 31.", sampling_params=SamplingParams(temperature=0, max_tokens=64))
    assert isinstance(value, dict) and set(value) == {"name", "age"}
    jsonschema.validate(value, schema)
