"""Multi-LoRA throughput: the same workload with 0 (base), 1, 4 and 16 distinct adapters in the batch,
as ratios to the base model measured in the same run, plus adapter load time.

What is measured (default model SmolLM2-135M-Instruct, float32, CPU unless ``--device cuda`` /
``--dtype bfloat16``; greedy, ``ignore_eos``):

* **Adapters**: ``max(--adapter-counts)`` PEFT LoRA adapters made with ``peft`` on Hugging Face's
  LlamaForCausalLM loaded from the model directory, targeting all seven linear modules (q, k, v, o,
  gate, up, down) of every layer, ranks cycling through ``--ranks`` (8, 16, 32, 64), random A and
  B (B scaled down so outputs stay plausible), saved to a temporary directory (``--adapter-dir``
  keeps them). **Load time**: ``LLM.load_adapter`` (read + validate) per adapter, median and max.
* **Workload**: ``--num-requests`` (64) prompts of real English text (stdlib docstrings, as in
  ``bench/throughput.py``), lengths uniform in [50, 300], outputs uniform in [16, 128], fixed seed.
  With k adapters, request i runs adapter ``i % k``; k = 0 is the base model. One ``generate`` call
  per run; generated tok/s = output tokens / wall time, total tok/s = (prompt + output) / wall time.
  Runs are interleaved (base, 1, 4, 16, then 16, 4, 1, base, ...) ``--repeats`` (3) times; medians
  are reported.
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
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_common import device_name, passage_ids, write_results
from lora_quality import int8_quality

from loomlm import LLM, SamplingParams
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
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (the Triton shrink/expand kernels)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="model and adapters")
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
    for round_index in range(args.repeats):
        # The order alternates between rounds, so no count always runs right after another.
        for k in counts if round_index % 2 == 0 else counts[::-1]:
            times[k].append(run_once(llm, prompts, outputs, per_request[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def report(args, walls: dict[int, float], load_times: list[float], prompts, outputs) -> str:
    generated, total = sum(outputs), sum(outputs) + sum(map(len, prompts))
    lines = [
        f"- Machine: {device_name(args.device)}, {os.cpu_count()} cores; device {args.device}, {args.dtype}; "
        f"torch {torch.__version__} with "
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
            device=args.device,
            dtype=args.dtype,
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
