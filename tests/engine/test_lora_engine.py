"""Multi-LoRA in the engine: PEFT parity for mixed batches, slot eviction, prefix-cache isolation,
bad adapters and no head-of-line blocking behind a cold adapter."""

import shutil

import pytest
import torch
from lora_support import GREEDY, assert_peft_parity, prompts, record_logits, run

from loomlm.adapters.errors import AdapterError
from loomlm.engine.config import CacheConfig, EngineConfig, LoRAConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.sampling_params import SamplingParams

ADAPTERS = ("all8", "rs4", "re16")


def make_engine(model_dir, *, max_loras=4, max_cpu_loras=None, budget=256, prefix=True, chunked=True):
    config = EngineConfig(
        model=str(model_dir),
        scheduler=SchedulerConfig(
            max_num_seqs=16,
            max_num_batched_tokens=budget,
            max_model_len=256,
            enable_chunked_prefill=chunked,
        ),
        cache=CacheConfig(block_size=8, num_blocks=256, enable_prefix_caching=prefix),
        lora=LoRAConfig(enable=True, max_loras=max_loras, max_lora_rank=16, max_cpu_loras=max_cpu_loras),
    )
    return LLMEngine(config)


@pytest.fixture
def lora_engine(tiny_llama_dir, tiny_lora_adapters):
    engine = make_engine(tiny_llama_dir)
    for name in ADAPTERS:
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    return engine


def mixed_items(seed=0, count=8, low=5, high=40):
    names = [*ADAPTERS, None]
    return [(f"r{i}", p, names[i % 4]) for i, p in enumerate(prompts(seed, count, low, high))]


def test_mixed_batch_matches_peft_per_row(
    lora_engine, tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch
):
    rows = record_logits(lora_engine, monkeypatch)
    items = mixed_items()
    outputs = run(lora_engine, items)
    assert_peft_parity(outputs, rows, items, tiny_llama_dir, tiny_lora_adapters, peft_logits)
    # The adapters really change the model: the same prompt differs from the base model.
    base = peft_logits(tiny_llama_dir, None, items[0][1])[-1]
    assert not torch.allclose(rows["r0"][0], base, atol=1e-2)


@pytest.mark.parametrize("native", [False, True], ids=["torch-batched", "cpp"])
def test_decode_steps_batch_same_layout_adapters_and_keep_parity(
    tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch, native
):
    # all8 and all8b share rank and targets: on the torch path their decode tokens run as one batched
    # class; on the C++ path every decode-sized slot runs there, each reading its own row.
    engine = make_engine(tiny_llama_dir)
    scratch = engine.executor.runner.lora_weights.cpu_scratch
    if native and not scratch.native:
        pytest.skip("loomlm._C is not built")
    scratch.native = native
    for name in ("all8", "all8b", "re16"):
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    rows = record_logits(engine, monkeypatch)
    class_sizes = []
    make_step = engine.executor.runner.lora_weights.step

    def spying(meta):
        step = make_step(meta)
        plan = step.plans["qkv_proj"]
        if native:
            class_sizes.append([plan.native.info.shape[0]] if plan.native is not None else [])
        else:
            class_sizes.append([len(c.slots) for c in plan.batched.classes] if plan.batched else [])
        # The runner groups the step's chunks by adapter: each adapter's tokens are one run of rows.
        assert all(run.ids is None for plan in step.plans.values() for run in plan.singles)
        return step

    monkeypatch.setattr(engine.executor.runner.lora_weights, "step", spying)
    names = ["all8", "all8b", "all8", "all8b", "re16", None, "all8", "all8b"]
    items = [(f"d{i}", p, names[i]) for i, p in enumerate(prompts(5, 8, 5, 20))]
    outputs = run(engine, items, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    assert_peft_parity(outputs, rows, items, tiny_llama_dir, tiny_lora_adapters, peft_logits)
    # Decode steps ran all8 and all8b in one class (torch), or several slots in one C++ call.
    assert (
        any(2 in sizes for sizes in class_sizes) if not native else any(s and s[0] >= 2 for s in class_sizes)
    )


def test_chunked_prefill_and_prefix_cache_keep_parity(
    tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch
):
    engine = make_engine(tiny_llama_dir, budget=24)
    for name in ADAPTERS:
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    rows = record_logits(engine, monkeypatch)
    shared = prompts(1, 1, 30, 30)[0]
    tails = prompts(2, 8, 2, 12)
    names = [*ADAPTERS, None]
    items = [(f"a{i}", shared + tail, names[i % 4]) for i, tail in enumerate(tails)]
    outputs = run(engine, items)
    assert_peft_parity(outputs, rows, items, tiny_llama_dir, tiny_lora_adapters, peft_logits)
    # Second pass: the shared prefix comes from the cache, per adapter.
    again = [(f"b{i}", prompt, adapter) for i, (_, prompt, adapter) in enumerate(items)]
    outputs = run(engine, again)
    assert all(outputs[rid].num_cached_tokens >= 24 for rid, _, _ in again)
    assert_peft_parity(outputs, rows, again, tiny_llama_dir, tiny_lora_adapters, peft_logits)


def test_more_adapters_than_slots_all_finish_correctly(
    tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch
):
    # One slot and one CPU copy: every adapter switch evicts the slot and re-reads from disk.
    engine = make_engine(tiny_llama_dir, max_loras=1, max_cpu_loras=1)
    for name in ADAPTERS:
        engine.load_adapter(name, str(tiny_lora_adapters[name]))
    rows = record_logits(engine, monkeypatch)
    items = mixed_items(seed=3, count=9)
    outputs = run(engine, items)
    assert_peft_parity(outputs, rows, items, tiny_llama_dir, tiny_lora_adapters, peft_logits)
    assert len(engine.adapters.cpu_cached_names()) == 1
    assert max(len(step) for step in rows["adapters per step"]) == 1  # never more than max_loras


def test_prefix_cache_separates_adapters_and_reloads(
    tiny_llama_dir, tiny_lora_adapters, peft_logits, monkeypatch, tmp_path
):
    engine = make_engine(tiny_llama_dir)
    engine.load_adapter("x", str(tiny_lora_adapters["all8"]))
    engine.load_adapter("y", str(tiny_lora_adapters["re16"]))
    rows = record_logits(engine, monkeypatch)
    prompt = prompts(4, 1, 33, 33)[0]
    dirs = {"x": tiny_lora_adapters["all8"], "y": tiny_lora_adapters["re16"], None: None}
    first = [("p0", prompt, "x"), ("p1", prompt, "y"), ("p2", prompt, None)]
    outputs = run(engine, first)
    assert_peft_parity(outputs, rows, first, tiny_llama_dir, dirs, peft_logits)
    # Same prompt again under "x": a prefix hit; then "x" reloaded with other weights: no stale KV.
    outputs = run(engine, [("p3", prompt, "x")])
    assert outputs["p3"].num_cached_tokens > 0
    assert_peft_parity(outputs, rows, [("p3", prompt, "x")], tiny_llama_dir, dirs, peft_logits)
    engine.load_adapter("x", str(tiny_lora_adapters["rs4"]))
    dirs["x"] = tiny_lora_adapters["rs4"]
    outputs = run(engine, [("p4", prompt, "x")])
    assert outputs["p4"].num_cached_tokens == 0
    assert_peft_parity(outputs, rows, [("p4", prompt, "x")], tiny_llama_dir, dirs, peft_logits)


def test_unknown_and_bad_adapters_fail_alone(lora_engine, tiny_lora_adapters, tmp_path):
    with pytest.raises(AdapterError, match="unknown adapter 'nope'"):
        lora_engine.add_request([1, 2, 3], GREEDY, prompt_token_ids=[1, 2, 3], adapter="nope")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_lora_adapters["all8"], bad)
    (bad / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError, match="cannot read"):
        lora_engine.load_adapter("bad", str(bad))
    assert [ref.name for ref in lora_engine.list_adapters()] == sorted(ADAPTERS)
    # An adapter whose files vanish after loading fails its own request only.
    gone = tmp_path / "gone"
    shutil.copytree(tiny_lora_adapters["all8"], gone)
    lora_engine.load_adapter("gone", str(gone))
    lora_engine.adapters._cpu.clear()  # as if evicted from the CPU cache
    shutil.rmtree(gone)
    outputs = run(lora_engine, [("g", [5, 6, 7], "gone"), ("ok", [5, 6, 7], "all8"), ("b", [5, 6, 7], None)])
    assert outputs["g"].error is not None and "gone" in outputs["g"].error
    assert outputs["ok"].error is None and len(outputs["ok"].outputs[0].token_ids) == GREEDY.max_tokens
    assert outputs["b"].error is None


def test_cold_adapter_does_not_block_base_requests(tiny_llama_dir, tiny_lora_adapters):
    engine = make_engine(tiny_llama_dir, max_loras=1)
    engine.load_adapter("a", str(tiny_lora_adapters["all8"]))
    engine.load_adapter("b", str(tiny_lora_adapters["re16"]))
    long = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    engine.add_request([1, 2, 3], long, request_id="holder", prompt_token_ids=[1, 2, 3], adapter="a")
    engine.step()  # "holder" runs and pins the only slot
    engine.add_request([4, 5], GREEDY, request_id="cold", prompt_token_ids=[4, 5], adapter="b")
    engine.add_request([6, 7], GREEDY, request_id="base", prompt_token_ids=[6, 7])
    finished = {}
    while "base" not in finished:
        for output in engine.step(only_finished=True):
            finished[output.request_id] = output
    assert "holder" not in finished and "cold" not in finished  # base overtook the cold adapter
    while engine.has_unfinished_requests():
        for output in engine.step(only_finished=True):
            finished[output.request_id] = output
    assert finished["cold"].error is None and len(finished["cold"].outputs[0].token_ids) == 6
