"""Offline throughput of loomlm against Hugging Face transformers ``generate``, measured in one run.

What is measured (default model SmolLM2-135M-Instruct, float32, CPU; greedy, ``ignore_eos``):

* **Workload**: ``--num-requests`` (128) prompts with lengths uniform in [50, 300] tokens and output
  lengths uniform in [16, 256] (fixed ``--seed``). Prompts are windows of real English text: the
  docstrings of a few stdlib modules (so they follow the printed Python version), tokenized once and
  sliced at random offsets. loomlm gets all requests in one ``llm.generate`` call with per-request
  ``max_tokens``. HF gets padded batches of ``--hf-batch-size`` (16) in arrival order (``--hf-sort``:
  sorted by prompt length), left padding with an attention mask; one ``generate`` call must run to
  the batch's longest output (``max_new_tokens = min_new_tokens = max(batch outputs)``), but only each
  request's own requested tokens count as output, since that is what the user asked for.
  Generated tok/s = requested output tokens / wall time; total tok/s = (prompt + output tokens) /
  wall time. Median of ``--workload-repeats`` (1).
* **Batch-1 decode**: one ~100-token prompt; decode tok/s = 127 / (time(128 new) - time(1 new)), so
  prefill is excluded; the same method for both systems; median of ``--repeats`` (3).
* **Prefill**: one 512-token prompt with 1 new token; tok/s = 512 / time; median of ``--repeats``.

Both systems warm up first, use torch's default thread count (printed), and see the same prompts.
loomlm runs with prefix caching off by default (``--prefix-caching`` turns it on): the warm-up and
repeats would otherwise measure cache hits instead of compute. Run from the repository root:

    .venv/bin/python bench/throughput.py                    # full comparison (many minutes)
    .venv/bin/python bench/throughput.py --quick --skip-hf  # smoke test, seconds
    .venv/bin/python bench/throughput.py --write-results    # also record in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch
import transformers
from bench_common import cpu_model, passage_ids, write_results

from loomlm import LLM, SamplingParams
from loomlm.engine.model_files import default_model_dir

# Workload and engine sizes: name -> (default, default with --quick).
SIZES = {
    "num_requests": (128, 8),
    "min_prompt": (50, 20),
    "max_prompt": (300, 64),
    "min_output": (16, 4),
    "max_output": (256, 16),
    "hf_batch_size": (16, 4),
    "repeats": (3, 1),
    "decode_prompt": (100, 32),
    "decode_tokens": (128, 16),
    "prefill_len": (512, 64),
    "kv_cache_bytes": (4 << 30, 256 << 20),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (full, quick) in SIZES.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {full} ({quick} with --quick)")
    p.add_argument("--workload-repeats", type=int, default=1, help="median over this many workload runs")
    p.add_argument("--hf-sort", action="store_true", help="batch HF requests sorted by prompt length")
    p.add_argument("--skip-hf", action="store_true", help="measure loomlm only")
    p.add_argument("--quick", action="store_true", help="tiny workload for smoke testing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-num-seqs", type=int, default=128)
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--prefix-caching", action="store_true", help="enable loomlm prefix caching")
    p.add_argument("--write-results", action="store_true", help="replace this run's section in RESULTS.md")
    args = p.parse_args()
    for name, defaults in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.quick])
    return args


def window(ids: list[int], rng: random.Random, n: int) -> list[int]:
    start = rng.randrange(len(ids) - n + 1)
    return ids[start : start + n]


def make_workload(args, ids: list[int]) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(args.seed)
    lengths = [rng.randint(args.min_prompt, args.max_prompt) for _ in range(args.num_requests)]
    outputs = [rng.randint(args.min_output, args.max_output) for _ in range(args.num_requests)]
    return [window(ids, rng, n) for n in lengths], outputs


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loom_run(llm: LLM, prompts: list[list[int]], outputs: list[int]) -> float:
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in outputs]
    start = time.perf_counter()
    results = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    got = [len(r.outputs[0].token_ids) for r in results]
    if got != outputs or any(r.error for r in results):
        raise RuntimeError(f"loomlm returned {got} tokens for requested {outputs}")
    return elapsed


def hf_batch(model, prompts: list[list[int]], new_tokens: int, pad_id: int) -> None:
    width = max(map(len, prompts))
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(do_sample=False, pad_token_id=pad_id, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
    if out.shape[1] != width + new_tokens:
        raise RuntimeError(f"HF generated {out.shape[1] - width} tokens, asked for {new_tokens}")


def hf_run(model, prompts, outputs, batch_size: int, pad_id: int, sort: bool) -> float:
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort else list(range(len(prompts)))
    start = time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        hf_batch(model, [prompts[i] for i in idx], max(outputs[i] for i in idx), pad_id)
    return time.perf_counter() - start


def measure(args, ids, run_workload, run_one) -> dict[str, float]:
    """Warm up, then the workload (median wall time) and the batch-1 decode / prefill medians."""
    prompts, outputs = make_workload(args, ids)
    warm = random.Random(args.seed + 2)
    run_workload([window(ids, warm, 16), window(ids, warm, 24)], [4, 8])
    run_one(window(ids, warm, 32), 4)
    wall = statistics.median(run_workload(prompts, outputs) for _ in range(args.workload_repeats))
    rng = random.Random(args.seed + 1)  # both systems see the same single prompts
    decode, prefill = [], []
    for _ in range(args.repeats):
        t_full = run_one(window(ids, rng, args.decode_prompt), args.decode_tokens)
        t_one = run_one(window(ids, rng, args.decode_prompt), 1)
        decode.append((args.decode_tokens - 1) / max(t_full - t_one, 1e-9))
        prefill.append(args.prefill_len / run_one(window(ids, rng, args.prefill_len), 1))
    decode_name = f"batch-1 decode tok/s ({args.decode_prompt}-token prompt, {args.decode_tokens} new)"
    return {
        "workload wall time (s)": wall,
        "workload generated tok/s": sum(outputs) / wall,
        "workload total tok/s": (sum(outputs) + sum(map(len, prompts))) / wall,
        decode_name: statistics.median(decode),
        f"prefill tok/s ({args.prefill_len}-token prompt)": statistics.median(prefill),
    }


def run_loomlm(args, ids: list[int], llm: LLM) -> tuple[dict[str, float], dict]:
    result = measure(args, ids, lambda p, o: loom_run(llm, p, o), lambda p, n: loom_run(llm, [p], [n]))
    return result, llm.engine.stats()


def run_hf(args, ids: list[int]) -> dict[str, float]:
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(default_model_dir(), dtype=torch.float32).eval()
    pad_id = model.generation_config.pad_token_id
    pad_id = pad_id if pad_id is not None else model.generation_config.eos_token_id
    workload = lambda p, o: hf_run(model, p, o, args.hf_batch_size, pad_id, args.hf_sort)
    return measure(args, ids, workload, lambda p, n: timed(lambda: hf_batch(model, [p], n, pad_id)))


def report(args, loom: dict[str, float], hf: dict[str, float] | None, stats: dict, ids) -> str:
    prompts, outputs = make_workload(args, ids)
    order = "sorted by prompt length" if args.hf_sort else "arrival order"
    lines = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads (default); transformers {transformers.__version__}; "
        f"Python {platform.python_version()}; {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Workload: {args.num_requests} requests, prompts {args.min_prompt}-{args.max_prompt} tokens "
        f"({sum(map(len, prompts))} total), outputs {args.min_output}-{args.max_output} tokens "
        f"({sum(outputs)} total), uniform, seed {args.seed}; greedy, ignore_eos; "
        f"median of {args.workload_repeats} workload run(s) and {args.repeats} single-prompt run(s)",
        f"- loomlm: one generate call; max_num_seqs={args.max_num_seqs}, "
        f"max_num_batched_tokens={args.max_num_batched_tokens}, kv_cache_bytes={args.kv_cache_bytes}, "
        f"prefix caching {'on' if args.prefix_caching else 'off'}; "
        f"{stats.get('num_preemptions', 0)} preemptions in the whole run",
        f"- HF transformers: float32 generate, batches of {args.hf_batch_size} in {order}, left padding, "
        "each batch runs to its longest output; only requested tokens count"
        + (" (skipped)" if hf is None else ""),
        "",
        "| metric | loomlm | HF transformers | loomlm / HF |",
        "|---|---:|---:|---:|",
    ]
    for name, value in loom.items():
        other = hf[name] if hf else None
        ratio = "" if other is None or "wall" in name else f"{value / other:.2f}x"
        lines.append(f"| {name} | {value:,.2f} | {'-' if other is None else f'{other:,.2f}'} | {ratio} |")
    return "\n".join([*lines, "", "loomlm / HF > 1 means loomlm is faster."])


def main() -> None:
    args = parse_args()
    knobs = ("max_num_seqs", "max_num_batched_tokens", "kv_cache_bytes")
    llm = LLM(**{k: getattr(args, k) for k in knobs}, enable_prefix_caching=args.prefix_caching)
    ids = passage_ids(llm.tokenizer, max(args.max_prompt, args.prefill_len, args.decode_prompt))
    print(f"loomlm: {args.num_requests} requests, torch threads {torch.get_num_threads()} ...", flush=True)
    loom, stats = run_loomlm(args, ids, llm)
    del llm
    gc.collect()
    hf = None
    if not args.skip_hf:
        print(f"HF transformers: batches of {args.hf_batch_size} ...", flush=True)
        hf = run_hf(args, ids)
    section = report(args, loom, hf, stats, ids)
    print("\n" + section)
    if args.write_results:
        write_results("throughput", section, args.quick)
        print("\nwrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
