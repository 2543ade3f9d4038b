"""Where one engine step's time goes, by op, against the machine's roofs ("measure before changing").

The default model (SmolLM2-135M-Instruct, float32, CPU, greedy) runs single ``LLMEngine.step`` calls
of three shapes, each at ``--batches`` (1, 8, 64) sequences:

* **prefill**: every sequence a fresh prompt of ``min(--prefill-len, budget / batch)`` tokens (one
  chunk each; the default budget of 2048 tokens makes it 128, 128 and 32 tokens);
* **decode**: every sequence generates one token over ``--context`` (256) tokens already cached;
* **mixed**: those decodes plus one fresh ``--prefill-len``-token prompt chunk (batch + 1 sequences).

Each op is timed by wrappers the script puts around the engine's modules and functions (see
``profile_ops.instrument``; no engine code changes) as exclusive wall time: linear layers, KV store,
decode K/V gather, SDPA, the rest of attention, rotary, RMSNorm, SiLU·mul, glue, LM head, sampler;
"Python overhead" is the rest of the step: scheduling, input preparation, output processing and
the step's own body. Medians over ``--repeats`` steps after ``--warmup``; instrumented and plain
(unwrapped) steps alternate so the timers' own cost shows. One extra plain step per case runs under
``torch.profiler`` to count the torch ops it dispatches.

The roofs come from the same run and thread count: a large tensor copy and an fp32 GEMV (bandwidth,
GB/s), a large fp32 matmul (GFLOP/s), each matmul both through torch.mm in the engine's weight layout
and through oneDNN with a prepacked weight, and one tiny torch op (µs). An op's "roof" column is its
achieved rate as a fraction of its roofline bound (the bytes it must move at the better bandwidth,
capped by the better GEMM rate; "bw" or "mm" says which bounds it).

    .venv/bin/python bench/profile_step.py --quick            # smoke test (not a measurement)
    .venv/bin/python bench/profile_step.py --write-results    # the measurement, a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import subprocess
import time

import torch
from bench_common import cpu_model, passage_ids, write_results
from profile_ops import (
    DESCRIPTIONS,
    LINEARS,
    MODEL_OPS,
    OVERHEAD,
    Timers,
    instrument,
    measure_roofs,
    op_costs,
    roof_fraction,
)

from loomlm import LLM, SamplingParams

BUDGET = 2048  # max_num_batched_tokens, the engine's default
SIZES = {"prefill_len": (128, 32), "context": (256, 64), "repeats": (7, 2), "warmup": (2, 1)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (full, quick) in SIZES.items():
        p.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {full} ({quick} with --quick)")
    p.add_argument(
        "--batches", help="sequences per step, comma-separated (default 1,8,64; 1,4,16 with --quick)"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke test")
    p.add_argument(
        "--label", help="record under profile_step-LABEL (e.g. after), keeping the earlier section"
    )
    p.add_argument(
        "--write-results", action="store_true", help="replace the profile_step section of RESULTS.md"
    )
    args = p.parse_args()
    for name, defaults in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.quick])
    args.batches = [int(b) for b in (args.batches or ("1,4,16" if args.quick else "1,8,64")).split(",")]
    return args


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        max_batch = max(args.batches)
        steps = args.warmup + 2 * args.repeats + 1
        tokens = max_batch * (args.context + 2 * steps + 32) + 2 * BUDGET
        self.llm = LLM(
            max_num_seqs=max(128, max_batch + 1),
            max_num_batched_tokens=BUDGET,
            num_kv_blocks=-(-tokens // 16) + 64,
            enable_prefix_caching=False,
            seed=args.seed,
        )
        self.engine = self.llm.engine
        # touch every page once: steady state
        for key_cache, value_cache in self.engine.executor.runner.kv_caches:
            key_cache.zero_()
            value_cache.zero_()
        self.ids = passage_ids(self.llm.tokenizer, max(args.context, args.prefill_len) + 1)
        self.rng = random.Random(args.seed)
        self.params = SamplingParams(temperature=0, max_tokens=4096, ignore_eos=True)

    def add(self, n: int, length: int) -> list[str]:
        starts = [self.rng.randrange(len(self.ids) - length) for _ in range(n)]
        return [self.engine.add_request(self.ids[s : s + length], self.params) for s in starts]

    def step(self, timed: bool, expect: list[int]) -> dict[str, float]:
        """One engine step: its wall time ("step") and, if ``timed``, each op's exclusive time."""
        timers = Timers()
        restore = instrument(self.engine, timers) if timed else None
        try:
            start = time.perf_counter()
            self.engine.step()
            wall = time.perf_counter() - start
        finally:
            if restore is not None:
                restore()
        if timed and sorted(q for q, _ in timers.chunks) != sorted(expect):
            raise RuntimeError(f"step scheduled {timers.chunks}, expected chunk sizes {expect}")
        times = timers.take()
        times["step"], times["chunks"] = wall, timers.chunks
        return times

    def count_ops(self) -> int:
        """Top-level torch ops dispatched by one plain step."""
        saved = os.dup(2)  # kineto prints a line per profiler start and stop on stderr
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 2)
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    self.engine.step()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return sum(1 for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::"))

    def runs(self, expect: list[int], fresh: tuple[int, int] | None) -> tuple[list[dict], int]:
        """Warm-up, then alternating instrumented and plain steps, then one step's op count. ``fresh``:
        (count, length) of prompts added before each step and aborted after it."""
        args, runs = self.args, []
        for i in range(args.warmup + 2 * args.repeats + 1):
            added = self.add(*fresh) if fresh else []
            if i < args.warmup + 2 * args.repeats:
                runs.append(self.step(timed=i % 2 == 0, expect=expect))
            else:
                ops = self.count_ops()
            self.engine.abort_request(added)
        return runs[args.warmup :], ops

    def prefill(self, batch: int) -> tuple[list[dict], int]:
        chunk = min(self.args.prefill_len, BUDGET // batch)
        return self.runs([chunk] * batch, (batch, chunk))

    def decode_and_mixed(self, batch: int) -> tuple[tuple[list[dict], int], tuple[list[dict], int]]:
        added = self.add(batch, self.args.context)
        sched = self.engine.scheduler
        while len(sched.running) < batch or any(
            r.num_tokens - r.num_computed_tokens > 1 for r in sched.running
        ):
            self.engine.step()  # prefill the contexts (not measured)
        decode = self.runs([1] * batch, None)
        mixed = self.runs([1] * batch + [self.args.prefill_len], (1, self.args.prefill_len))
        self.engine.abort_request(added)
        return decode, mixed


def summarize(runs: list[dict]) -> dict:
    """Medians per row over the instrumented steps, the plain steps' median, and the step's chunks."""
    timed = [r for r in runs if "step other" in r]
    rows: dict[str, float] = {}
    for r in timed:
        r["linear total"] = sum(r.get(k, 0.0) for k in LINEARS)
        r["Python overhead"] = sum(r.get(k, 0.0) for k in OVERHEAD)
    for key in (*MODEL_OPS, "linear total", *OVERHEAD, "Python overhead", "step"):
        rows[key] = statistics.median(r.get(key, 0.0) for r in timed)
    rows["plain step"] = statistics.median(r["step"] for r in runs if "step other" not in r)
    return {"rows": rows, "chunks": timed[-1]["chunks"]}


def shape_table(name: str, cases: dict[int, dict], engine, roofs) -> str:
    batches = list(cases)
    block_size = engine.executor.runner.block_size
    costs = {b: op_costs(engine.arch, c["chunks"], block_size) for b, c in cases.items()}
    head = " | ".join(f"b{b} ms | b{b} % | b{b} roof" for b in batches)
    lines = [f"### {name}", "", f"| op | {head} |", "|---|" + "---:|" * 3 * len(batches)]
    order = [*LINEARS, "linear total", *MODEL_OPS[len(LINEARS) :], "Python overhead", *OVERHEAD]
    for key in [*order, "step", "plain step"]:
        cells = []
        for b in batches:
            rows = cases[b]["rows"]
            t, step = rows[key], rows["step"]
            roof = roof_fraction(costs[b].get(key), t, roofs)
            cells.append(
                f"{t * 1e3:.2f} | {t / step:.0%} | {roof}"
                if key not in ("step", "plain step")
                else f"{t * 1e3:.1f} | |"
            )
        label = DESCRIPTIONS.get(key, key)
        lines.append(f"| {'  ' * (key in OVERHEAD)}{label} | " + " | ".join(cells) + " |")
    lines.append("")
    for b in batches:
        chunks, ops = cases[b]["chunks"], cases[b]["ops"]
        tokens, prefills = sum(q for q, _ in chunks), [c for c in chunks if c[0] > 1]
        contexts = sorted({s for q, s in chunks if q == 1})
        desc = f"{len(chunks)} sequences, {tokens} tokens"
        desc += f"; prefill chunks {sorted({q for q, _ in prefills})}" if prefills else ""
        desc += f"; decode contexts {contexts[0]}-{contexts[-1]}" if contexts else ""
        floor = ops * roofs.op_floor_us / 1e3
        lines.append(f"- b{b}: {desc}; {ops} torch ops per plain step (x tiny-op floor = {floor:.1f} ms)")
    return "\n".join(lines)


def report(args, roofs, tables: list[str], load_s: float) -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), ""
    )
    l3 = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("L3")), "?")
    mib, n = (32, 1024) if args.quick else (256, 2048)
    dnn_gemv = f"{roofs.gemv_dnn_gbs:.1f} GB/s" if roofs.gemv_dnn_gbs else "unavailable"
    dnn_gemm = f"{roofs.gemm_dnn_gflops:.0f} GFLOP/s" if roofs.gemm_dnn_gflops else "unavailable"
    lines = [
        f"- Machine: {model or cpu_model()} ({os.cpu_count()} cores, L3 {l3}); CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (other processes on these cores distort every number)",
        f"- SmolLM2-135M-Instruct float32 (load {load_s:.1f} s), greedy, prefix caching off, budget {BUDGET} "
        f"tokens; prefill chunk {args.prefill_len}, decode context {args.context}; medians of {args.repeats} "
        f"instrumented steps (alternating with {args.repeats} plain ones) after {args.warmup} warm-up",
        "",
        "| roof | value |",
        "|---|---:|",
        f"| copy bandwidth (read + write, {mib} MiB) | {roofs.copy_gbs:.1f} GB/s |",
        f"| fp32 GEMV x[1,4096] @ W ({mib} MiB), torch.mm, engine layout | {roofs.gemv_mm_gbs:.1f} GB/s |",
        f"| fp32 GEMV, oneDNN prepacked weight | {dnn_gemv} |",
        f"| fp32 GEMM {n}^3, torch.mm | {roofs.gemm_mm_gflops:.0f} GFLOP/s |",
        f"| fp32 GEMM {n}^3, oneDNN prepacked weight | {dnn_gemm} |",
        f"| one tiny torch op (add of 576 floats) | {roofs.op_floor_us:.1f} µs |",
        "",
        "Columns per batch: exclusive time (ms), share of the instrumented step, and the achieved rate "
        "as a fraction of the op's roofline bound: the bytes it must move at the GEMV roof (matmuls, "
        "SDPA) or the copy roof (the rest), capped by the GEMM roof; `bw` or `mm` says which binds, "
        "and each roof is the better of torch.mm and oneDNN. Above 100%: the data sat in cache. "
        "Mixed columns: batch = decoding sequences, plus one prefill chunk. Python overhead = the step "
        "less every timed op; Python inside the model's forwards counts in glue, and each torch call's "
        "own dispatch in that op's time.",
    ]
    return "\n".join(lines) + "\n\n" + "\n\n".join(tables)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    roofs = measure_roofs(args.quick)
    start = time.perf_counter()
    bench = Bench(args)
    load_s = time.perf_counter() - start
    print(f"profiling: batches {args.batches}, torch threads {torch.get_num_threads()} ...", flush=True)
    shapes: dict[str, dict[int, dict]] = {"prefill": {}, "decode": {}, "mixed": {}}
    for batch in args.batches:
        runs, ops = bench.prefill(batch)
        shapes["prefill"][batch] = {**summarize(runs), "ops": ops}
        (decode, decode_ops), (mixed, mixed_ops) = bench.decode_and_mixed(batch)
        shapes["decode"][batch] = {**summarize(decode), "ops": decode_ops}
        shapes["mixed"][batch] = {**summarize(mixed), "ops": mixed_ops}
        print(f"  batch {batch} done", flush=True)
    tables = [shape_table(name, cases, bench.engine, roofs) for name, cases in shapes.items()]
    section = report(args, roofs, tables, load_s)
    print("\n" + section)
    if args.write_results:
        write_results("profile_step" + (f"-{args.label}" if args.label else ""), section, args.quick)
        print("\nwrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
