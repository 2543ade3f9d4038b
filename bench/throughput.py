"""Offline throughput of loomlm against Hugging Face transformers ``generate``, measured in one run.

What is measured (default model SmolLM2-135M-Instruct, float32, CPU unless ``--device cuda`` /
``--dtype bfloat16``, which both systems then use; greedy, ``ignore_eos``):

* **Workload**: ``--num-requests`` (128) prompts with lengths uniform in [50, 300] tokens and output
  lengths uniform in [16, 256] (fixed ``--seed``). Prompts are windows of real English text: the
  docstrings of a few stdlib modules (so they follow the printed Python version), tokenized once and
  sliced at random offsets. loomlm gets all requests in one ``llm.generate`` call with per-request
  ``max_tokens``. HF gets padded batches in arrival order (``--hf-sort``: sorted by prompt length),
  left padding with an attention mask, at each of ``--hf-batch-sizes`` (8,16,32,64); loomlm is
  compared with HF's best batch size (highest generated tok/s) and the whole sweep is printed. One
  HF ``generate`` call must run to the batch's longest output, but only each request's own requested
  tokens count as output. Generated tok/s = requested output tokens / wall time; total tok/s =
  (prompt + output tokens) / wall time. Median of ``--workload-repeats`` (1) interleaved runs.
* **Batch-1 decode**: one ~100-token prompt; decode tok/s = 127 / (time(128 new) - time(1 new)), so
  prefill is excluded; the same method for both systems; median of ``--repeats`` (3).
* **Prefill**: one 512-token prompt with 1 new token; tok/s = 512 / time; median of ``--repeats``.
* **Grid** (``--grid``, instead of the above): requests 16/64/256 x output mean 32/128 x prompt mean
  64/512, lengths uniform in [mean/2, 3*mean/2]; per cell loomlm / HF-best generated tok/s and HF's
  best batch size; median of ``--workload-repeats`` (3 with ``--grid``) interleaved runs. Subsets:
  ``--grid-requests 16,64 --grid-outputs 32 --grid-prompts 64`` (the full grid takes hours on 2 cores).

Both systems warm up first, run in the same process (same torch threads, printed; same weights) and
see the same prompts. loomlm runs with prefix caching off by default (``--prefix-caching`` turns it
on): the warm-up and repeats would otherwise measure cache hits instead of compute. From the root:

    .venv/bin/python bench/throughput.py                    # full comparison (many minutes)
    .venv/bin/python bench/throughput.py --quick --skip-hf  # smoke test, seconds
    .venv/bin/python bench/throughput.py --write-results    # also record in bench/RESULTS.md
    .venv/bin/python bench/throughput.py --grid --grid-requests 16 --grid-outputs 32 --grid-prompts 64
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import sys

import torch
import transformers
from bench_common import device_name, passage_ids, write_results
from throughput_grid import (
    HF,
    best_hf,
    grid_report,
    loom_run,
    run_grid,
    sweep_table,
    sweep_workload,
    timed,
    warm_up,
    window,
)

from loomlm import LLM

# Workload and engine sizes: name -> (default, default with --quick).
SIZES = {
    "num_requests": (128, 8),
    "min_prompt": (50, 20),
    "max_prompt": (300, 64),
    "min_output": (16, 4),
    "max_output": (256, 16),
    "repeats": (3, 1),
    "decode_prompt": (100, 32),
    "decode_tokens": (128, 16),
    "prefill_len": (512, 64),
    "kv_cache_bytes": (4 << 30, 256 << 20),
}
# Comma-separated lists: name -> (default, default with --quick).
LISTS = {
    "hf_batch_sizes": ("8,16,32,64", "4,8"),
    "grid_requests": ("16,64,256", "4"),
    "grid_outputs": ("32,128", "8"),
    "grid_prompts": ("64,512", "32"),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (full, quick) in SIZES.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {full} ({quick} with --quick)")
    for name, (full, quick) in LISTS.items():
        p.add_argument(
            "--" + name.replace("_", "-"), help=f"comma-separated; default {full} ({quick} with --quick)"
        )
    p.add_argument(
        "--workload-repeats",
        type=int,
        help="median over this many interleaved workload runs (default 1; 3 with --grid; 1 with --quick)",
    )
    p.add_argument(
        "--grid", action="store_true", help="run the workload grid instead of the default workload"
    )
    p.add_argument("--hf-sort", action="store_true", help="batch HF requests sorted by prompt length")
    p.add_argument(
        "--single", action="store_true", help="only batch-1 decode and prefill, the two sides interleaved"
    )
    p.add_argument("--skip-hf", action="store_true", help="measure loomlm only")
    p.add_argument(
        "--hf-sweep-once",
        action="store_true",
        help="sweep HF's batch sizes in the first round only, then repeat loomlm against the best",
    )
    p.add_argument("--quick", action="store_true", help="tiny workload for smoke testing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: both systems run there")
    p.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16"), help="both systems' weights"
    )
    p.add_argument("--max-num-seqs", type=int, default=128)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--prefix-caching", action="store_true", help="enable loomlm prefix caching")
    p.add_argument("--write-results", action="store_true", help="replace this run's section in RESULTS.md")
    args = p.parse_args()
    for name, defaults in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.quick])
    for name, defaults in LISTS.items():
        value = getattr(args, name) or defaults[args.quick]
        setattr(args, name, [int(v) for v in value.split(",") if v.strip()])
    if args.workload_repeats is None:
        args.workload_repeats = 3 if args.grid and not args.quick else 1
    return args


def make_workload(args, ids: list[int]) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(args.seed)
    lengths = [rng.randint(args.min_prompt, args.max_prompt) for _ in range(args.num_requests)]
    outputs = [rng.randint(args.min_output, args.max_output) for _ in range(args.num_requests)]
    return [window(ids, rng, n) for n in lengths], outputs


def workload_metrics(prompts, outputs, wall: float) -> dict[str, float]:
    return {
        "workload wall time (s)": wall,
        "workload generated tok/s": sum(outputs) / wall,
        "workload total tok/s": (sum(outputs) + sum(map(len, prompts))) / wall,
    }


def single_prompt(args, ids, run_one) -> dict[str, float]:
    """Batch-1 decode and prefill medians; both systems see the same single prompts."""
    rng = random.Random(args.seed + 1)
    decode, prefill = [], []
    for _ in range(args.repeats):
        t_full = run_one(window(ids, rng, args.decode_prompt), args.decode_tokens)
        t_one = run_one(window(ids, rng, args.decode_prompt), 1)
        decode.append((args.decode_tokens - 1) / max(t_full - t_one, 1e-9))
        prefill.append(args.prefill_len / run_one(window(ids, rng, args.prefill_len), 1))
    decode_name = f"batch-1 decode tok/s ({args.decode_prompt}-token prompt, {args.decode_tokens} new)"
    return {
        decode_name: statistics.median(decode),
        f"prefill tok/s ({args.prefill_len}-token prompt)": statistics.median(prefill),
    }


def single_report(args, llm: LLM, hf, ids: list[int]) -> str:
    """Batch-1 decode and prefill, loomlm and HF alternating round by round (the same prompts each
    round), medians over ``--repeats`` rounds, as a table of ratios."""
    one_round = argparse.Namespace(**{**vars(args), "repeats": 1})
    rounds: dict[str, dict[str, list[float]]] = {"loomlm": {}, "hf": {}}
    for round_index in range(args.repeats):
        sides = [
            ("loomlm", lambda p, n: loom_run(llm, [p], [n])),
            ("hf", lambda p, n: timed(lambda: hf.batch([p], n))),
        ]
        for side, run_one in sides if round_index % 2 == 0 else sides[::-1]:
            for metric, value in single_prompt(one_round, ids, run_one).items():
                rounds[side].setdefault(metric, []).append(value)
    lines = [
        f"- {device_name(args.device)}; torch threads {torch.get_num_threads()}; {args.dtype}; greedy; "
        f"{args.repeats} rounds, sides alternating",
        "",
        "| metric | loomlm | HF transformers | loomlm / HF |",
        "|---|---:|---:|---:|",
    ]
    for metric, values in rounds["loomlm"].items():
        ours, theirs = statistics.median(values), statistics.median(rounds["hf"][metric])
        lines.append(f"| {metric} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |")
    return "\n".join(lines)


def run_loomlm(args, ids: list[int], llm: LLM) -> tuple[dict[str, float], dict]:
    """loomlm alone (used by compare_revisions.py): warm-up, workload median, single-prompt medians."""
    warm_up(llm, None, ids, args.seed)
    prompts, outputs = make_workload(args, ids)
    wall = statistics.median(loom_run(llm, prompts, outputs) for _ in range(args.workload_repeats))
    one = single_prompt(args, ids, lambda p, n: loom_run(llm, [p], [n]))
    return {**workload_metrics(prompts, outputs, wall), **one}, llm.engine.stats()


def header(args, llm, hf_skipped: bool) -> list[str]:
    stats = llm.engine.stats()
    order = "sorted by prompt length" if args.hf_sort else "arrival order"
    return [
        f"- Machine: {device_name(args.device)}, {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads (default, both systems in one process); transformers "
        f"{transformers.__version__}; Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- loomlm: one generate call per workload run; max_num_seqs={args.max_num_seqs}, "
        f"max_num_batched_tokens={args.max_num_batched_tokens}, kv_cache_bytes={args.kv_cache_bytes}, "
        f"prefix caching {'on' if args.prefix_caching else 'off'}; "
        f"{stats.get('num_preemptions', 0)} preemptions in the whole run; kernels: "
        f"{llm.engine.executor.runner.kernel_report}",
        f"- Device {args.device}, {args.dtype} weights in both systems",
        f"- HF transformers: {args.dtype} generate, batch sizes {','.join(map(str, args.hf_batch_sizes))} "
        f"(capped at the request count) in {order}, left padding, each batch runs to its longest output; "
        "only requested tokens count; compared at its best batch size (highest generated tok/s)"
        + (" (skipped)" if hf_skipped else ""),
        f"- Workload runs: median of {args.workload_repeats} interleaved run(s) per side "
        + (
            "(round 1: loomlm and every HF batch size; later rounds: loomlm and round 1's fastest HF "
            "batch size; order alternating between rounds)"
            if args.hf_sweep_once
            else "(loomlm and each HF batch size once per round, order alternating between rounds)"
        ),
    ]


def report(args, walls, loom_one, hf_one, llm, ids) -> str:
    prompts, outputs = make_workload(args, ids)
    best = best_hf(walls)
    loom = {**workload_metrics(prompts, outputs, statistics.median(walls["loomlm"])), **loom_one}
    hf = (
        None
        if best is None
        else {**workload_metrics(prompts, outputs, statistics.median(walls[best])), **hf_one}
    )
    lines = [
        *header(args, llm, hf is None),
        f"- Workload: {args.num_requests} requests, prompts {args.min_prompt}-{args.max_prompt} tokens "
        f"({sum(map(len, prompts))} total), outputs {args.min_output}-{args.max_output} tokens "
        f"({sum(outputs)} total), uniform, seed {args.seed}; greedy, ignore_eos; "
        f"{args.repeats} single-prompt run(s) per system",
        "",
        f"| metric | loomlm | HF transformers{'' if best is None else f' (batch {best})'} | loomlm / HF |",
        "|---|---:|---:|---:|",
    ]
    for name, value in loom.items():
        other = hf[name] if hf else None
        ratio = "" if other is None or "wall" in name else f"{value / other:.2f}x"
        lines.append(f"| {name} | {value:,.2f} | {'-' if other is None else f'{other:,.2f}'} | {ratio} |")
    lines += ["", "loomlm / HF > 1 means loomlm is faster. HF batch-size sweep on the workload:", ""]
    return "\n".join([*lines, *sweep_table(walls, prompts, outputs)])


def main() -> None:
    args = parse_args()
    knobs = ("max_num_seqs", "max_num_batched_tokens", "kv_cache_bytes")
    llm = LLM(
        **{k: getattr(args, k) for k in knobs},
        enable_prefix_caching=args.prefix_caching,
        device=args.device,
        dtype=args.dtype,
    )
    longest = max(
        args.max_prompt, args.prefill_len, args.decode_prompt, *(m * 3 // 2 for m in args.grid_prompts)
    )
    ids = passage_ids(llm.tokenizer, longest)
    hf = None if args.skip_hf else HF(args.device, getattr(torch, args.dtype))
    print(f"torch threads {torch.get_num_threads()}; HF batch sizes {args.hf_batch_sizes}", flush=True)
    warm_up(llm, hf, ids, args.seed)
    if args.single and hf is not None:
        section, name = single_report(args, llm, hf, ids), "throughput_single"
    elif args.grid:
        cells = run_grid(args, llm, hf, ids)
        lines = [
            *header(args, llm, hf is None),
            f"- Grid cells: lengths uniform in [mean/2, 3*mean/2], seed {args.seed}; greedy, ignore_eos; "
            f"{len(cells)} of the 12 cells of the full grid (requests 16/64/256 x output 32/128 x "
            "prompt 64/512)",
            f"- Command: bench/throughput.py {' '.join(sys.argv[1:])}",
            "",
            *grid_report(cells),
        ]
        section, name = "\n".join(lines), "throughput_grid"
    else:
        prompts, outputs = make_workload(args, ids)
        print(
            f"workload: {args.num_requests} requests, {args.workload_repeats} interleaved run(s) ...",
            flush=True,
        )
        walls = sweep_workload(args, llm, hf, prompts, outputs)
        loom_one = single_prompt(args, ids, lambda p, n: loom_run(llm, [p], [n]))
        hf_one = {} if hf is None else single_prompt(args, ids, lambda p, n: timed(lambda: hf.batch([p], n)))
        section, name = report(args, walls, loom_one, hf_one, llm, ids), "throughput"
    print("\n" + section)
    if args.write_results:
        write_results(name, section, args.quick)
        print("\nwrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
