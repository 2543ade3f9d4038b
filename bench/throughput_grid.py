"""The runners of ``bench/throughput.py``: loomlm and HF ``generate`` on one workload, HF's batch-size
sweep interleaved with loomlm, and the workload grid (``--grid``).

HF at its best setting: every workload runs HF at each of ``--hf-batch-sizes`` (capped at the number
of requests, duplicates dropped) and loomlm is compared against the batch size with the highest
generated tokens/s on that workload. Each repeat runs loomlm and every HF batch size once, in an order
that alternates between repeats, so all sides see the same machine state; medians over the repeats.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from loomlm import LLM, SamplingParams
from loomlm.engine.model_files import default_model_dir


def window(ids: list[int], rng: random.Random, n: int) -> list[int]:
    start = rng.randrange(len(ids) - n + 1)
    return ids[start : start + n]


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


class HF:
    """HF transformers ``generate`` on the same weights (float32 on the CPU by default), with
    left-padded batches."""

    def __init__(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        transformers.logging.set_verbosity_error()
        self.device = torch.device(device)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(default_model_dir(), dtype=dtype)
        self.model.to(self.device).eval()
        config = self.model.generation_config
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id

    def batch(self, prompts: list[list[int]], new_tokens: int) -> None:
        width = max(map(len, prompts))
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=mask, pad_token_id=self.pad_id, **kwargs
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # timed by the caller's host clock
        if out.shape[1] != width + new_tokens:
            raise RuntimeError(f"HF generated {out.shape[1] - width} tokens, asked for {new_tokens}")

    def run(self, prompts, outputs, batch_size: int, sort: bool) -> float:
        """Wall time of the workload in batches; each batch runs to its longest requested output."""
        order = list(range(len(prompts)))
        if sort:
            order.sort(key=lambda i: len(prompts[i]))
        start = time.perf_counter()
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            self.batch([prompts[i] for i in idx], max(outputs[i] for i in idx))
        return time.perf_counter() - start


def effective_batch_sizes(batch_sizes: list[int], num_requests: int) -> list[int]:
    """Batch sizes above the request count run the same batches as the count itself: keep one."""
    return sorted({min(b, num_requests) for b in batch_sizes})


def sweep(
    llm, hf, prompts, outputs, batch_sizes: list[int], repeats: int, sort: bool, sweep_once: bool = False
) -> dict:
    """Interleaved wall times: {"loomlm": [s, ...], batch_size: [s, ...], ...}, one entry per repeat.
    ``sweep_once``: the first round runs every HF batch size, the later ones only the fastest of that
    round (the long cells: HF at every size, every round, takes hours on 2 cores)."""
    sides: list = ["loomlm"] + ([] if hf is None else effective_batch_sizes(batch_sizes, len(prompts)))
    walls: dict = {side: [] for side in sides}
    for r in range(repeats):
        if r == 1 and sweep_once and len(sides) > 2:
            sides = ["loomlm", best_hf(walls)]
        for side in sides if r % 2 == 0 else sides[::-1]:
            if side == "loomlm":
                walls[side].append(loom_run(llm, prompts, outputs))
            else:
                walls[side].append(hf.run(prompts, outputs, side, sort))
    return walls


def sweep_workload(args, llm, hf, prompts, outputs) -> dict:
    """`sweep` with the command line's batch sizes, repeats, ordering and sweep-once choice."""
    return sweep(
        llm,
        hf,
        prompts,
        outputs,
        args.hf_batch_sizes,
        args.workload_repeats,
        args.hf_sort,
        args.hf_sweep_once,
    )


def warm_up(llm, hf, ids: list[int], seed: int) -> None:
    rng = random.Random(seed + 2)
    prompts = [window(ids, rng, 16), window(ids, rng, 24)]
    loom_run(llm, prompts, [4, 8])
    loom_run(llm, [prompts[0]], [4])
    if hf is not None:
        hf.run(prompts, [4, 8], 2, False)
        hf.batch([prompts[0]], 4)


def best_hf(walls: dict) -> int | None:
    """The HF batch size with the lowest median wall time (highest tok/s on the same workload)."""
    sizes = [s for s in walls if s != "loomlm"]
    return min(sizes, key=lambda s: statistics.median(walls[s])) if sizes else None


def sweep_table(walls: dict, prompts, outputs) -> list[str]:
    """Markdown rows: each side's median wall, generated and total tok/s, and loomlm / that side."""
    gen, total = sum(outputs), sum(outputs) + sum(map(len, prompts))
    loom = statistics.median(walls["loomlm"])
    best = best_hf(walls)
    lines = [
        "| side | wall s (median) | generated tok/s | total tok/s | loomlm / side |",
        "|---|---:|---:|---:|---:|",
    ]
    for side, runs in walls.items():
        wall = statistics.median(runs)
        name = "loomlm" if side == "loomlm" else f"HF batch {side}" + (" (best)" if side == best else "")
        ratio = "" if side == "loomlm" else f"{wall / loom:.2f}x"
        lines.append(f"| {name} | {wall:,.2f} | {gen / wall:,.2f} | {total / wall:,.2f} | {ratio} |")
    return lines


# --- the workload grid -------------------------------------------------------------------------


def cell_workload(ids, n: int, out_mean: int, prompt_mean: int, seed: int):
    """``n`` prompts with lengths uniform in [mean/2, 3*mean/2], outputs likewise (fixed seed)."""
    rng = random.Random(f"{seed}-{n}-{out_mean}-{prompt_mean}")
    lengths = [rng.randint(max(1, prompt_mean // 2), prompt_mean * 3 // 2) for _ in range(n)]
    outputs = [rng.randint(max(1, out_mean // 2), out_mean * 3 // 2) for _ in range(n)]
    return [window(ids, rng, k) for k in lengths], outputs


def run_grid(args, llm, hf, ids) -> list[dict]:
    cells = []
    for n in args.grid_requests:
        for out_mean in args.grid_outputs:
            for prompt_mean in args.grid_prompts:
                prompts, outputs = cell_workload(ids, n, out_mean, prompt_mean, args.seed)
                print(f"cell {n} requests, output ~{out_mean}, prompt ~{prompt_mean} ...", flush=True)
                walls = sweep_workload(args, llm, hf, prompts, outputs)
                print("\n".join(sweep_table(walls, prompts, outputs)), flush=True)
                cell = dict(requests=n, output=out_mean, prompt=prompt_mean, walls=walls)
                cells.append(dict(cell, prompts=sum(map(len, prompts)), outputs=sum(outputs)))
    return cells


def grid_report(cells: list[dict]) -> list[str]:
    lines = [
        "| requests | output mean | prompt mean | loomlm gen tok/s | HF best gen tok/s | HF best batch "
        "| loomlm / HF best | HF sweep gen tok/s (batch: tok/s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cells:
        med = {side: c["outputs"] / statistics.median(runs) for side, runs in c["walls"].items()}
        best = best_hf(c["walls"])
        hf_cells = (
            ("-", "-", "-", "-")
            if best is None
            else (
                f"{med[best]:,.2f}",
                str(best),
                f"{med['loomlm'] / med[best]:.2f}x",
                ", ".join(f"{s}: {v:,.1f}" for s, v in med.items() if s != "loomlm"),
            )
        )
        row = (str(c["requests"]), str(c["output"]), str(c["prompt"]), f"{med['loomlm']:,.2f}", *hf_cells)
        lines.append("| " + " | ".join(row) + " |")
    return lines
