"""AsyncLLM's engine thread: what it costs against the offline engine, and how long the event loop
waits while it steps (the two numbers that decide thread vs separate engine-core process).

Workload: ``--requests`` (32) prompts of the passages (``--prompt-len`` 64 tokens), greedy,
``--max-tokens`` (64) with ``ignore_eos``, on SmolLM2-135M-Instruct. Measured, interleaved over
``--repeats`` (3) rounds after one warm-up round of each, medians reported:

- offline: ``LLM.generate`` of the whole batch (the baseline: the same engine, no thread);
- async: the same prompts as concurrent ``AsyncLLM.generate_stream`` consumers on one event loop,
  the engine on its thread; a 5 ms ticker task on the same loop records how late it wakes
  (event-loop lag: what an HTTP server's other requests would wait).

The ratio async / offline of output tokens/s is the thread's cost; the lag's p50 / p99 / max is
the loop's responsiveness under the GIL. A process would pay pickling of every step's outputs
instead of the lag.

    .venv/bin/python bench/async_overhead.py --quick
    .venv/bin/python bench/async_overhead.py --write-results
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import statistics
import time
from importlib.metadata import version

import torch
from bench_common import cpu_model, passage_ids, write_results

from loomlm import LLM, AsyncLLM, SamplingParams

TICK_S = 0.005


def prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    ids = passage_ids(tokenizer, count * length)
    return [ids[i * length : (i + 1) * length] for i in range(count)]


def run_offline(llm: LLM, token_ids: list[list[int]], params: SamplingParams) -> float:
    start = time.perf_counter()
    outputs = llm.generate(token_ids, params, use_tqdm=False)
    wall = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outputs) / wall


async def run_async(
    llm: AsyncLLM, token_ids: list[list[int]], params: SamplingParams
) -> tuple[float, list[float]]:
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - before - TICK_S)

    async def consume(ids: list[int]) -> int:
        last = None
        async for step in llm.generate_stream(ids, params):
            last = step
        return len(last.output.outputs[0].token_ids)

    tick = asyncio.create_task(ticker())
    start = time.perf_counter()
    counts = await asyncio.gather(*(consume(ids) for ids in token_ids))
    wall = time.perf_counter() - start
    done.set()
    await tick
    return sum(counts) / wall, lags


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="8 requests, 16 tokens, 1 round (smoke test)")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.repeats = 8, 16, 1
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    offline = LLM(max_num_seqs=args.requests)
    token_ids = prompts(offline.tokenizer, args.requests, args.prompt_len)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    async_llm = AsyncLLM.from_engine(LLM(max_num_seqs=args.requests).engine)
    loop = asyncio.new_event_loop()
    offline_rates, async_rates, lags = [], [], []
    try:
        for round_index in range(args.repeats + 1):
            rate_offline = run_offline(offline, token_ids, params)
            rate_async, round_lags = loop.run_until_complete(run_async(async_llm, token_ids, params))
            if round_index:
                offline_rates.append(rate_offline)
                async_rates.append(rate_async)
                lags.extend(round_lags)
    finally:
        loop.run_until_complete(async_llm.shutdown())
        loop.close()
    off, asy = statistics.median(offline_rates), statistics.median(async_rates)
    lag_ms = sorted(1e3 * lag for lag in lags)
    pick = lambda q: lag_ms[min(len(lag_ms) - 1, int(q * len(lag_ms)))]
    lines = [
        "| engine | output tok/s (median) | ratio to offline |",
        "|---|---:|---:|",
        f"| offline `LLM.generate` | {off:.1f} | 1.00 |",
        f"| `AsyncLLM` ({args.requests} concurrent streams) | {asy:.1f} | {asy / off:.2f} |",
        "",
        f"Event-loop lag of a {TICK_S * 1e3:.0f} ms ticker during async generation ({len(lag_ms)} ticks): "
        f"p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, max {lag_ms[-1]:.2f} ms.",
    ]
    print("\n".join(lines))
    if args.write_results:
        machine = (
            f"{cpu_model()}, {torch.get_num_threads()} torch threads, Python {platform.python_version()}"
        )
        header = (
            f"{datetime.date.today()} · {machine} · torch {version('torch')} · SmolLM2-135M-Instruct, "
            f"{args.requests} requests x {args.prompt_len} prompt + {args.max_tokens} output tokens, greedy, "
            f"{args.repeats} interleaved rounds after a warm-up\n\n"
        )
        write_results("async_overhead", header + "\n".join(lines) + "\n", args.quick)


if __name__ == "__main__":
    main()
