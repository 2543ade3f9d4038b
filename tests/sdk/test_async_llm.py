"""AsyncLLM on a tiny random Llama with the real SmolLM2 tokenizer: streams, batches, chats and
extractions equal the offline LLM token for token, stream deltas join to the final text (per
completion, never showing a stop string that is then cut), and adapters load in call order and
unload under a running request. Lifecycle (leaving early, errors, crashes, shutdown) is in
test_async_llm_lifecycle.py."""

from __future__ import annotations

import asyncio

import pytest
from async_support import ASYNC_OPTIONS, run
from pydantic import BaseModel

from loomlm import LLM, AdapterError, ExtractionError, LoRARequest, SamplingParams

OPTIONS = ASYNC_OPTIONS
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
PROMPTS = [f"Prompt number {i} about {topic}" for i, topic in enumerate(["rain", "cats", "maps", "tea"] * 4)]
CHAT = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def offline(tiny_llama_dir):
    return LLM(str(tiny_llama_dir), **OPTIONS)


async def collect(stream) -> list:
    return [item async for item in stream]


# -- results and deltas ----------------------------------------------------------------------------
def test_generate_and_streams_equal_the_offline_llm_token_for_token(llm, offline):
    expected = offline.generate(PROMPTS[:4], GREEDY)
    outputs = run(llm.generate(PROMPTS[:4], GREEDY))
    assert [o.outputs[0].token_ids for o in outputs] == [o.outputs[0].token_ids for o in expected]
    items = run(collect(llm.generate_stream(PROMPTS[0], GREEDY)))
    assert [item.finished for item in items] == [False] * (len(items) - 1) + [True]
    final = items[-1].output.outputs[0]
    assert final.token_ids == expected[0].outputs[0].token_ids and final.finish_reason == "length"
    assert "".join(item.text_delta() for item in items) == final.text == expected[0].outputs[0].text
    assert [t for item in items for t in item.deltas[0].token_ids] == final.token_ids
    assert [item.deltas[0].finish_reason for item in items][-2:] == [None, "length"]


def test_sixteen_concurrent_streams_complete_and_their_deltas_join_to_the_final_text(llm, offline):
    params = [SamplingParams(temperature=0, max_tokens=4 + i, ignore_eos=True) for i in range(16)]
    expected = offline.generate(PROMPTS, params)
    ticks = 0

    async def ticker() -> None:  # the event loop keeps running while the engine steps
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    async def main():
        tick_task = asyncio.create_task(ticker())
        streams = [collect(llm.generate_stream(p, sp)) for p, sp in zip(PROMPTS, params, strict=True)]
        results = await asyncio.gather(*streams)
        tick_task.cancel()
        return results

    for items, want in zip(run(main()), expected, strict=True):
        final = items[-1].output.outputs[0]
        assert items[-1].finished and final.token_ids == want.outputs[0].token_ids
        assert "".join(item.text_delta() for item in items) == final.text
    assert ticks >= 5


def test_n_completions_stream_deltas_per_index(llm, offline):
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=10, ignore_eos=True)
    [expected] = offline.generate(PROMPTS[1], params)
    items = run(collect(llm.generate_stream(PROMPTS[1], params)))
    for index in range(3):
        final = items[-1].output.outputs[index]
        assert final.token_ids == expected.outputs[index].token_ids
        assert "".join(item.text_delta(index) for item in items) == final.text
        assert [item.deltas[index].finish_reason for item in items].count("length") == 1


def test_a_stream_never_shows_part_of_a_stop_string_that_is_cut_off(llm, offline):
    [two] = offline.generate(PROMPTS[2], GREEDY.model_copy(update={"max_tokens": 2}))
    [full] = offline.generate(PROMPTS[2], GREEDY)
    cut = len(two.outputs[0].text)
    stop = full.outputs[0].text[cut - 2 : cut + 3]  # spans the second and third tokens
    items = run(collect(llm.generate_stream(PROMPTS[2], GREEDY.model_copy(update={"stop": [stop]}))))
    final = items[-1].output.outputs[0]
    assert final.finish_reason == "stop" and final.stop_reason == stop and stop not in final.text
    assert "".join(item.text_delta() for item in items) == final.text


def test_chat_equals_the_offline_chat_and_streams_content_deltas(llm, offline):
    [expected] = offline.chat(CHAT, GREEDY)
    [output] = run(llm.chat(CHAT, GREEDY))
    assert output.prompt_token_ids == expected.prompt_token_ids
    assert output.outputs[0].token_ids == expected.outputs[0].token_ids
    chunks = run(collect(llm.chat_stream(CHAT, GREEDY)))
    assert "".join(c.choices[0].content for c in chunks) == chunks[-1].output.outputs[0].text
    assert [c.choices[0].finish_reason for c in chunks].count("length") == 1 and chunks[-1].finished


def test_chat_with_tools_renders_and_constrains_like_the_offline_chat(llm, offline):
    params = SamplingParams(temperature=0, max_tokens=8)

    def pick(color: str) -> str:
        """Pick a color."""
        return color

    [expected] = offline.chat(CHAT, params, tools=[pick], tool_choice="required")
    [output] = run(llm.chat(CHAT, params, tools=[pick], tool_choice="required"))
    assert output.prompt_token_ids == expected.prompt_token_ids
    assert output.outputs[0].token_ids == expected.outputs[0].token_ids
    with pytest.raises(ValueError, match="tools must be a list"):
        run(llm.chat(CHAT, params, tools=pick))


def test_extract_fails_like_the_offline_extract(llm, offline):
    class City(BaseModel):
        name: str

    short = SamplingParams(temperature=0, max_tokens=4)
    with pytest.raises(ExtractionError, match="max_tokens=4") as want:
        offline.extract(City, "Paris is big.", sampling_params=short)
    with pytest.raises(ExtractionError, match="max_tokens=4") as got:
        run(llm.extract(City, "Paris is big.", sampling_params=short))
    assert got.value.output.outputs[0].token_ids == want.value.output.outputs[0].token_ids


# -- adapters ---------------------------------------------------------------------------------------
def test_adapters_load_in_call_order_run_and_unload_under_a_running_request(
    make_llm, tiny_lora_adapters, tiny_llama_dir, peft_logits
):
    llm = make_llm(max_loras=2, max_lora_rank=16)
    prompt = [11, 22, 33, 44, 55, 66]
    paths = {name: str(tiny_lora_adapters[name]) for name in ("all8", "re16")}

    async def main():
        refs = await asyncio.gather(
            llm.load_adapter("a", paths["all8"]), llm.load_adapter("a", paths["re16"])
        )
        assert refs[0].adapter_id < refs[1].adapter_id
        assert [(r.name, r.path) for r in await llm.list_adapters()] == [("a", paths["re16"])]
        stream = await llm.submit(prompt, GREEDY, adapter="a")
        first = await anext(stream)
        await llm.unload_adapter("a")  # the running request keeps its weights to the end
        with pytest.raises(AdapterError, match="unknown adapter 'a'"):
            await llm.submit(prompt, GREEDY, adapter="a")
        final = (await collect(stream))[-1]
        via_request = LoRARequest("b", 1, paths["re16"])
        [again] = await llm.generate([prompt], GREEDY, lora_request=via_request)
        return first, final, again

    first, final, again = run(main())
    expected = peft_logits(tiny_llama_dir, tiny_lora_adapters["re16"], prompt)[-1].argmax().item()
    assert first.output.outputs[0].token_ids[0] == expected
    assert final.output.outputs[0].finish_reason == "length" and final.output.error is None
    assert again.outputs[0].token_ids == final.output.outputs[0].token_ids
