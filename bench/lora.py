"""Multi-LoRA throughput: the same workload with 0 (base), 1, 4 and 16 distinct adapters in the batch,
as ratios to the base model measured in the same run, plus adapter load time.

What is measured (default model SmolLM2-135M-Instruct, float32, CPU; greedy, ``ignore_eos``):

* **Adapters**: ``max(--adapter-counts)`` PEFT LoRA adapters made with ``peft`` on Hugging Face's
  LlamaForCausalLM loaded from the model directory, targeting all seven linear modules (q, k, v, o,
  gate, up, down) of every layer, ranks cycling through ``--ranks`` (8, 16, 32, 64), random A and
  B (B scaled down so outputs stay plausible), saved to a temporary directory (``--adapter-dir``
  keeps them). **Load time**: ``LLM.load_adapter`` (read + validate) per adapter, median and max.
* **Workload**: ``--num-requests`` (64) prompts of real English text (stdlib docstrings, as in
  ``bench/throughput.py``), lengths uniform in [50, 300], outputs uniform in [16, 128], fixed seed.
  With k adapters, request i runs adapter ``i % k``; k = 0 is the base model. One ``generate`` call
  per run; generated tok/s = output tokens / wall time, total tok/s = (prompt + output) / wall time.
  Runs are interleaved (base, 1, 4, 16, base, ...) ``--repeats`` (3) times; medians are reported.
* One engine for every run (LoRA enabled, ``max_loras`` = the largest count, ``max_lora_rank`` =
  the largest rank); base runs use no adapter, so they take the engine's no-LoRA path. Prefix
  caching is off so repeats measure compute. Targets (not tests): 1 adapter >= 0.9 and 16 adapters
  >= 0.8 of base generated tok/s.

Run from the repository root on an idle machine:

    .venv/bin/python bench/lora.py --quick            # smoke test, tiny sizes (not a measurement)
    .venv/bin/python bench/lora.py                    # the measurement (many minutes)
    .venv/bin/python bench/lora.py --write-results    # also replace its section in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import cpu_model, passage_ids, write_results
from quant import WINDOW, held_ids, quality

from loomlm import LLM, SamplingParams
from loomlm.engine.input_builder import single_sequence_input
from loomlm.engine.model_files import default_model_dir

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# name -> (default, default with --quick)
SIZES = {
    "num_requests": (64, 8),
    "min_prompt": (50, 16),
    "max_prompt": (300, 48),
    "min_output": (16, 4),
    "max_output": (128, 8),
    "repeats": (3, 1),
    "kv_cache_bytes": (2 << 30, 256 << 20),
}
LISTS = {"adapter_counts": ("1,4,16", "1,4"), "ranks": ("8,16,32,64", "8,16")}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (full, quick) in {**SIZES, **LISTS}.items():
        kind = int if name in SIZES else str
        help_text = f"default {full} ({quick} with --quick)"
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=help_text)
    p.add_argument("--model", help="model directory (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument(
        "--quantization", choices=("int8",), help="the base model's linear layers (default: float32)"
    )
    p.add_argument(
        "--lora-dtype",
        choices=("auto", "int8"),
        default="auto",
        help="adapter weights (default: auto, the model's dtype); int8 also measures perplexity and "
        "top-1 agreement against float32 adapters",
    )
    p.add_argument("--adapter-dir", help="keep the generated adapters here (default: a temp dir)")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes for smoke testing")
    p.add_argument("--write-results", action="store_true", help="replace this run's section in RESULTS.md")
    args = p.parse_args()
    for name, defaults in {**SIZES, **LISTS}.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.quick])
    args.adapter_counts = [int(x) for x in str(args.adapter_counts).split(",")]
    args.ranks = [int(x) for x in str(args.ranks).split(",")]
    return args


def make_adapters(model_dir: Path, out_dir: Path, count: int, ranks: list[int], seed: int) -> list[Path]:
    """``count`` PEFT adapters on all seven modules, ranks cycling through ``ranks``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    paths = []
    for i in range(count):
        rank = ranks[i % len(ranks)]
        path = out_dir / f"lora{i}-r{rank}"
        paths.append(path)
        if (path / "adapter_config.json").is_file():
            continue
        torch.manual_seed(seed + i)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, init_lora_weights=False)
        model = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.05)  # a modest update: the model still writes text
        model.save_pretrained(path)
        base = model.unload()  # the plain model again, for the next adapter
    return paths


def make_workload(args, ids: list[int]) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(args.seed)
    prompts, outputs = [], []
    for _ in range(args.num_requests):
        n = rng.randint(args.min_prompt, args.max_prompt)
        start = rng.randrange(len(ids) - n + 1)
        prompts.append(ids[start : start + n])
        outputs.append(rng.randint(args.min_output, args.max_output))
    return prompts, outputs


def run_once(llm: LLM, prompts, outputs, names: list[str | None]) -> float:
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in outputs]
    start = time.perf_counter()
    results = llm.generate(prompts, params, use_tqdm=False, adapter=names)
    elapsed = time.perf_counter() - start
    bad = [r.error for r in results if r.error]
    if bad or [len(r.outputs[0].token_ids) for r in results] != outputs:
        raise RuntimeError(f"a run failed: {bad[:3]}")
    return elapsed


def measure(args, llm: LLM, adapter_names: list[str], prompts, outputs) -> dict[int, float]:
    """Median wall time per adapter count (0 = base), runs interleaved across counts."""
    counts = [0, *args.adapter_counts]
    per_request = {k: [adapter_names[i % k] if k else None for i in range(len(prompts))] for k in counts}
    run_once(llm, prompts[:2], [2, 2], per_request[max(counts)][:2])  # warm-up: slots, code paths
    times: dict[int, list[float]] = {k: [] for k in counts}
    for _ in range(args.repeats):
        for k in counts:
            times[k].append(run_once(llm, prompts, outputs, per_request[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def report(args, walls: dict[int, float], load_times: list[float], prompts, outputs) -> str:
    generated, total = sum(outputs), sum(outputs) + sum(map(len, prompts))
    lines = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Workload: {args.num_requests} requests, prompts {args.min_prompt}-{args.max_prompt} tokens "
        f"({sum(map(len, prompts))} total), outputs {args.min_output}-{args.max_output} ({generated} total), "
        f"seed {args.seed}; greedy, ignore_eos; median of {args.repeats} interleaved runs",
        f"- Adapters: all 7 modules of every layer, ranks cycling {args.ranks}; request i uses adapter "
        f"i % k; max_num_seqs={args.max_num_seqs}, max_num_batched_tokens={args.max_num_batched_tokens}, "
        "prefix caching off",
        f"- Adapter load (read + validate): median {statistics.median(load_times) * 1e3:.1f} ms, "
        f"max {max(load_times) * 1e3:.1f} ms over {len(load_times)} adapters",
        "",
        "| adapters in batch | generated tok/s | total tok/s | ratio to base |",
        "|---|---:|---:|---:|",
    ]
    for k, wall in walls.items():
        name = "base model" if k == 0 else f"{k} distinct"
        lines.append(f"| {name} | {generated / wall:,.1f} | {total / wall:,.1f} | {walls[0] / wall:.2f} |")
    return "\n".join([*lines, "", "Targets: 1 adapter >= 0.90 of base, 16 adapters >= 0.80 of base."])


def slot_logits(runner, slot: int, window: list[int]) -> torch.Tensor:
    """Logits of every position of ``window`` (one sequence, one chunk) with adapter slot ``slot``."""
    model_input = single_sequence_input(window, runner.block_size, all_logits=True)
    model_input.token_slots = np.full(len(window), slot, dtype=np.int32)
    return runner.execute(model_input).double()


def adapter_quality(llm: LLM, names: list[str], ids: list[int]) -> list[tuple[float, list[torch.Tensor]]]:
    """Per adapter: perplexity over held text and each position's argmax, teacher-forced through the
    engine's runner with every token on that adapter's slot (as bench/quant.py does per mode)."""
    engine, runner = llm.engine, llm.engine.executor.runner
    results = []
    for name in names:
        slot = engine.adapters.acquire_slot(engine.adapters.get(name))
        try:
            results.append(quality(functools.partial(slot_logits, runner, slot), ids))
        finally:
            engine.adapters.release_slot(slot)
    return results


def engine_quality(
    args, model_dir: Path, paths: list[Path], quantization: str | None, lora_dtype: str, *, cpp: bool = True
) -> list[tuple[float, list[torch.Tensor]]]:
    """`adapter_quality` of a fresh engine with these settings: every slot in C++ (the path decode steps
    take; by default a window this long would run torch's matmuls), or with ``cpp=False`` in torch."""
    llm = LLM(
        str(model_dir),
        max_num_seqs=args.max_num_seqs,
        kv_cache_bytes=args.kv_cache_bytes,
        enable_prefix_caching=False,
        max_loras=len(paths),
        max_lora_rank=max(args.ranks),
        max_cpu_loras=len(paths),
        quantization=quantization,
        lora_dtype=lora_dtype,
    )
    scratch = llm.engine.executor.runner.lora_weights.cpu_scratch
    scratch.native &= cpp
    scratch.native_max_tokens = WINDOW
    names = [llm.load_adapter(path.name, str(path)).name for path in paths]
    return adapter_quality(llm, names, held_ids(llm.tokenizer, WINDOW))


def compared(label: str, got, expected) -> str:
    agree = [
        torch.cat(g[1]).eq(torch.cat(e[1])).float().mean().item() for g, e in zip(got, expected, strict=True)
    ]
    change = [g[0] / e[0] - 1 for g, e in zip(got, expected, strict=True)]
    return (
        f"| {label} | {statistics.median(agree):.1%} | {min(agree):.1%} | {statistics.median(change):+.2%} "
        f"| {max(change, key=abs):+.2%} |"
    )


def int8_quality(args, model_dir: Path, paths: list[Path]) -> str:
    """Int8 adapters against float32 adapters (which match PEFT: tests/), teacher-forced over held
    text: on a float32 base (the adapters' rounding alone) and on the benched base. A quantized base
    rounds each token's activations, which turns float-order differences into flipped roundings: the
    float32 adapters' torch path against their C++ path (same weights) shows that floor."""
    rows = []
    for base in dict.fromkeys([None, args.quantization]):
        reference = engine_quality(args, model_dir, paths, base, "auto")
        name = base or "float32"
        rows.append(
            compared(
                f"{name} base: int8 adapters", engine_quality(args, model_dir, paths, base, "int8"), reference
            )
        )
        if base is not None:
            torch_path = engine_quality(args, model_dir, paths, base, "auto", cpp=False)
            rows.append(
                compared(f"{name} base: float32 adapters, torch path (the floor)", torch_path, reference)
            )
    return "\n".join(
        [
            f"Against float32 adapters in C++ on the same base ({len(paths)} adapters, {WINDOW} held tokens, "
            "teacher-forced; float32 adapters match PEFT in tests/):",
            "",
            "| compared | top-1 agreement, median | lowest | perplexity change, median | largest |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main() -> None:
    args = parse_args()
    model_dir = Path(args.model) if args.model else default_model_dir()
    with tempfile.TemporaryDirectory(prefix="loomlm-lora-bench-") as tmp:
        adapter_dir = Path(args.adapter_dir) if args.adapter_dir else Path(tmp)
        num_adapters = max(args.adapter_counts)
        print(f"making {num_adapters} PEFT adapters (ranks {args.ranks}) in {adapter_dir} ...", flush=True)
        paths = make_adapters(model_dir, adapter_dir, num_adapters, args.ranks, args.seed)
        llm = LLM(
            str(model_dir),
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            kv_cache_bytes=args.kv_cache_bytes,
            enable_prefix_caching=False,
            max_loras=num_adapters,
            max_lora_rank=max(args.ranks),
            max_cpu_loras=num_adapters,
            quantization=args.quantization,
            lora_dtype=args.lora_dtype,
        )
        load_times, names = [], []
        for path in paths:
            start = time.perf_counter()
            names.append(llm.load_adapter(path.name, str(path)).name)
            load_times.append(time.perf_counter() - start)
        ids = passage_ids(llm.tokenizer, args.max_prompt)
        prompts, outputs = make_workload(args, ids)
        print(f"measuring base and {args.adapter_counts} adapters, {args.repeats} repeats ...", flush=True)
        walls = measure(args, llm, names, prompts, outputs)
        section = report(args, walls, load_times, prompts, outputs)
        if args.lora_dtype == "int8":
            del llm
            section += "\n\n" + int8_quality(args, model_dir, paths)
    print("\n" + section)
    if args.write_results:
        name = "lora" if args.quantization is None else f"lora-{args.quantization}"
        name += "-adapters-int8" if args.lora_dtype == "int8" else ""
        section = (
            f"Base model linear layers: {args.quantization}; adapter weights: {args.lora_dtype}.\n\n"
            if args.quantization or args.lora_dtype != "auto"
            else ""
        ) + section
        write_results(name, section, args.quick)
        print("\nwrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
