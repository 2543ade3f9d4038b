"""The engine's greedy output equals Hugging Face transformers' token for token, whatever the
scheduling: chunked prefill on or off, prefix-cache hits, preemption, priorities."""

import random

import pytest

from loomlm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


def random_prompts(seed: int, count: int, low: int, high: int, vocab: int = 49152) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(low, high))] for _ in range(count)]


def assert_matches_hf(llm: LLM, model_dir, prompts, hf_greedy, params=GREEDY, **generate_kwargs):
    outputs = llm.generate(prompts, params, **generate_kwargs)
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output.error is None
        expected = hf_greedy(model_dir, prompt, params.max_tokens)
        assert output.outputs[0].token_ids == expected, f"prompt of {len(prompt)} tokens diverged"


@pytest.fixture(scope="module")
def tiny_prompts():
    return random_prompts(seed=1, count=10, low=3, high=70)


@pytest.mark.parametrize("chunked", [True, False])
def test_tiny_llama_matches_hf_with_and_without_chunked_prefill(
    tiny_llama_dir, hf_greedy, tiny_prompts, chunked
):
    llm = LLM(
        str(tiny_llama_dir),
        enable_chunked_prefill=chunked,
        max_num_batched_tokens=32 if chunked else 512,
        max_model_len=512,
        block_size=8,
    )
    assert_matches_hf(llm, tiny_llama_dir, tiny_prompts, hf_greedy)


def test_untied_mha_llama_matches_hf(tiny_llama_dir_untied, hf_greedy, tiny_prompts):
    llm = LLM(str(tiny_llama_dir_untied), max_num_batched_tokens=48, block_size=4)
    assert_matches_hf(llm, tiny_llama_dir_untied, tiny_prompts, hf_greedy)


def test_prefix_cache_hits_give_the_same_tokens(tiny_llama_dir, hf_greedy):
    shared = random_prompts(seed=2, count=1, low=40, high=40)[0]
    prompts = [shared + tail for tail in random_prompts(seed=3, count=6, low=1, high=20)]
    llm = LLM(str(tiny_llama_dir), block_size=8, max_num_batched_tokens=64)
    assert_matches_hf(llm, tiny_llama_dir, prompts, hf_greedy)
    # Second pass: every shared block is now a hit.
    outputs = llm.generate(prompts, GREEDY)
    assert all(o.num_cached_tokens >= 40 for o in outputs)
    for prompt, output in zip(prompts, outputs, strict=True):
        assert output.outputs[0].token_ids == hf_greedy(tiny_llama_dir, prompt, GREEDY.max_tokens)


def test_preemption_under_a_tiny_kv_pool_keeps_outputs_exact(tiny_llama_dir, hf_greedy, tiny_prompts):
    llm = LLM(str(tiny_llama_dir), block_size=4, num_kv_blocks=40, max_num_batched_tokens=64)
    assert_matches_hf(llm, tiny_llama_dir, tiny_prompts, hf_greedy)
    assert llm.engine.stats()["num_preemptions"] > 0


def test_mixed_priorities_keep_outputs_exact(tiny_llama_dir, hf_greedy, tiny_prompts):
    llm = LLM(
        str(tiny_llama_dir), scheduling_policy="priority", block_size=4, num_kv_blocks=48, max_num_seqs=4
    )
    priorities = [i % 3 for i in range(len(tiny_prompts))]
    assert_matches_hf(llm, tiny_llama_dir, tiny_prompts, hf_greedy, priority=priorities)


@pytest.mark.slow  # the real SmolLM2-135M in both engines
def test_smollm2_greedy_matches_hf_on_a_batch_of_prompts(smollm2_dir, hf_greedy, tokenizer):
    texts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "List three primary colors:",
        "Water boils at",
        "The mitochondria is the powerhouse of the cell. In biology class today we learned that",
        "1, 2, 3, 4,",
        "Translate to French: Good morning, how are you?",
    ]
    prompts = [tokenizer(t).input_ids for t in texts]
    assert len({len(p) for p in prompts}) >= 5
    llm = LLM(max_num_batched_tokens=64, kv_cache_bytes=256 << 20)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    assert_matches_hf(llm, smollm2_dir, prompts, hf_greedy, params=params)
