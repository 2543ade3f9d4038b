"""Tensor parallelism on this machine: what the worker processes cost and what splitting buys.

Three engines on SmolLM2-135M-Instruct, the same weights and cores: ``uni`` (TP=1 in the engine
process, all cores: the baseline), ``mp`` TP=1 (one worker process: the price of the executor
seam, pickling each step into shared memory and a pipe round trip) and ``mp`` TP=3 (three
workers, as SmolLM2 has 9 query and 3 KV heads; the cores split between them, two all-reduces per
layer over gloo). Workloads: ``--requests`` (32)
prompts of ``--prompt-len`` (64) tokens, greedy, ``--max-tokens`` (32) with ``ignore_eos``, and
one request alone (batch-1 decode). Rounds interleave the engines; medians of ``--repeats`` (3)
after a warm-up; ratios against ``uni``.

On a 2-core CPU tensor parallelism cannot win (gloo's collectives and the process hops cost
more than splitting a 135M model saves); it is there for models that do not fit one device. On a
multi-GPU machine the same code runs NCCL.

    .venv/bin/python bench/tp.py --quick
    .venv/bin/python bench/tp.py --write-results
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from importlib.metadata import version

import torch
from bench_common import cpu_model, passage_ids, write_results

from loomlm import LLM, SamplingParams

ENGINES = (("uni, TP=1", "uni", 1), ("mp, TP=1", "mp", 1), ("mp, TP=3", "mp", 3))


def rate(llm: LLM, prompts: list[list[int]], params: SamplingParams) -> float:
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="8 requests, 8 tokens, 1 round (smoke test)")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.repeats = 8, 8, 1
    return args


def main() -> None:
    args = parse_args()
    engines = {
        name: LLM(max_num_seqs=args.requests, distributed_executor_backend=backend, tensor_parallel_size=tp)
        for name, backend, tp in ENGINES
    }
    ids = passage_ids(next(iter(engines.values())).tokenizer, args.requests * args.prompt_len)
    batch = [ids[i * args.prompt_len : (i + 1) * args.prompt_len] for i in range(args.requests)]
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    workloads = {f"{args.requests} requests": batch, "1 request (batch-1 decode)": batch[:1]}
    rates: dict[tuple[str, str], list[float]] = {}
    reference = {name: llm.generate(batch[:4], params, use_tqdm=False) for name, llm in engines.items()}
    tokens = {name: [o.outputs[0].token_ids for o in outs] for name, outs in reference.items()}
    same = all(t == tokens["uni, TP=1"] for t in tokens.values())
    for round_index in range(args.repeats + 1):
        for workload, prompts in workloads.items():
            for name, llm in engines.items():
                measured = rate(llm, prompts, params)
                if round_index:
                    rates.setdefault((workload, name), []).append(measured)
    for llm in engines.values():
        llm.engine.close()
    lines = ["| workload | engine | output tok/s (median) | ratio to uni |", "|---|---|---:|---:|"]
    for workload in workloads:
        base = statistics.median(rates[workload, ENGINES[0][0]])
        for name, _, _ in ENGINES:
            median = statistics.median(rates[workload, name])
            lines.append(f"| {workload} | {name} | {median:.1f} | {median / base:.2f} |")
    lines += ["", f"Greedy tokens of the three engines identical on 4 prompts: {'yes' if same else 'NO'}."]
    print("\n".join(lines))
    if args.write_results:
        header = (
            f"{datetime.date.today()} · {cpu_model()}, {torch.get_num_threads()} cores · torch "
            f"{version('torch')} · SmolLM2-135M-Instruct, {args.prompt_len}-token prompts, "
            f"{args.max_tokens} output tokens, greedy, {args.repeats} interleaved rounds after a warm-up\n\n"
        )
        write_results("tp", header + "\n".join(lines) + "\n", args.quick)


if __name__ == "__main__":
    main()
