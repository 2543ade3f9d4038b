"""``loomlm bench``: online throughput and latency, measured through ``AsyncLLM`` streams.

Workload: ``--num-prompts`` prompts of ``--input-len`` random token ids (special tokens excluded;
``--seed``), each asked for exactly ``--output-len`` tokens (greedy, ``ignore_eos``). They arrive all
at once, or as a Poisson process at ``--request-rate`` per second. Each request is a stream: its
time to first token (TTFT) is from just before ``submit`` to the first delta with tokens, its
end-to-end latency to the finished output, and TPOT = (e2e - TTFT) / (output tokens - 1). Throughput
is over the wall time from the first arrival to the last finish. ``--warmup`` requests run first and
are not counted. Unlike ``bench/throughput.py`` (offline ``LLM.generate`` against Hugging Face), this
measures what a server's clients would see."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loomlm.cli.common import FAILURE, CliError, closing_engine, load_llm, write
from loomlm.cli.options import add_engine_options, add_model_option, engine_options, positive_int

DESCRIPTION = """\
Measure serving throughput and latency on a synthetic workload: --num-prompts requests of
--input-len random tokens, each generating exactly --output-len tokens (greedy, EOS ignored),
sent all at once or at --request-rate per second, through the same async streams a server uses.
Prints requests/s, output and total tokens/s, and time to first token (TTFT), time per output
token (TPOT) and end-to-end latency (mean, p50, p90, p99)."""

EPILOG = """\
examples:
  loomlm bench
  loomlm bench --num-prompts 128 --input-len 256 --output-len 128 --max-num-seqs 64
  loomlm bench --request-rate 4 --plot bench.png --json > bench.json
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="measure throughput and latency",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    add_model_option(p)
    g = p.add_argument_group("workload")
    g.add_argument("--num-prompts", type=positive_int, default=32, metavar="N", help="requests measured")
    g.add_argument(
        "--input-len", type=positive_int, default=128, metavar="L", help="prompt tokens per request"
    )
    g.add_argument(
        "--output-len", type=positive_int, default=64, metavar="O", help="output tokens per request"
    )
    g.add_argument(
        "--request-rate",
        type=float,
        default=math.inf,
        metavar="R",
        help="Poisson arrivals per second; inf sends every request at once",
    )
    g.add_argument("--warmup", type=int, default=1, metavar="N", help="requests run first and not counted")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the prompts and arrival times")
    g = p.add_argument_group("output")
    g.add_argument(
        "--plot", metavar="PNG", help="write a plot: latency histograms and output tokens/s over time"
    )
    g.add_argument("--json", action="store_true", help="print the results as one JSON object")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_engine_options(p)
    return p


@dataclass
class RequestRecord:
    start: float  # just before submit
    prompt_tokens: int
    first: float | None = None  # first delta with tokens
    end: float | None = None
    output_tokens: int = 0
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens) per delta
    error: str | None = None


def run(args: argparse.Namespace) -> int:
    if args.request_rate <= 0:
        raise CliError("--request-rate must be positive (inf: all at once)")
    if args.warmup < 0:
        raise CliError("--warmup must be >= 0")
    plot = Path(args.plot) if args.plot else None
    if plot is not None and not plot.parent.is_dir():
        raise CliError(f"--plot: folder {plot.parent} does not exist")
    llm = load_llm(args.model, engine_options(args))
    with closing_engine(llm):
        max_len = llm.engine.config.scheduler.max_model_len
        if args.input_len + args.output_len > max_len:
            raise CliError(
                f"--input-len + --output-len ({args.input_len + args.output_len}) exceeds the context "
                f"length {max_len} (--max-model-len)"
            )
        prompts = make_prompts(llm.tokenizer, args.num_prompts, args.input_len, args.seed)
        records, duration = asyncio.run(_measure(llm, prompts, args))
        stats = llm.engine.stats()
    results = summarize(records, duration, stats)
    write(sys.stdout, json.dumps(results, indent=2) + "\n" if args.json else format_table(results, args))
    if plot is not None:
        from loomlm.cli.bench_plot import write_plot

        try:
            write_plot(plot, records, duration, title=workload_title(args))
        except OSError as error:
            raise CliError(f"cannot write the plot {plot}: {error}", code=FAILURE) from None
    if results["failed"]:
        first = next(r.error for r in records if r.error is not None)
        print(f"loomlm bench: error: {results['failed']} requests failed, e.g.: {first}", file=sys.stderr)
        return FAILURE
    return 0


def make_prompts(tokenizer: Any, num: int, length: int, seed: int) -> list[list[int]]:
    """``num`` prompts of ``length`` random non-special token ids."""
    rng = random.Random(seed)
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    return [[rng.choice(vocab) for _ in range(length)] for _ in range(num)]


async def _measure(llm: Any, prompts: list[list[int]], args: argparse.Namespace):
    from tqdm.auto import tqdm

    from loomlm import AsyncLLM, SamplingParams

    engine = AsyncLLM.from_engine(llm.engine)
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
    rng = random.Random(args.seed + 1)
    try:
        if args.warmup:
            warm = SamplingParams(temperature=0, max_tokens=min(4, args.output_len), ignore_eos=True)
            await asyncio.gather(*(_one(engine, p, warm, 0.0) for p in prompts[: args.warmup]))
        delays, t = [], 0.0
        for _ in prompts:
            delays.append(t)
            if math.isfinite(args.request_rate):
                t += rng.expovariate(args.request_rate)
        bar = tqdm(total=len(prompts), desc="bench", unit="req", file=sys.stderr, disable=args.no_progress)
        with bar:
            start = time.perf_counter()
            tasks = [_one(engine, p, params, start + d, bar) for p, d in zip(prompts, delays, strict=True)]
            records = await asyncio.gather(*tasks)
            duration = max((r.end or start) for r in records) - start
        for record in records:  # times relative to the first arrival
            record.start -= start
            record.first = None if record.first is None else record.first - start
            record.end = None if record.end is None else record.end - start
            record.events = [(when - start, n) for when, n in record.events]
    finally:
        await engine.shutdown()
    return records, duration


async def _one(engine: Any, prompt: list[int], params: Any, at: float, bar: Any = None) -> RequestRecord:
    from loomlm import RequestError

    if at:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
    record = RequestRecord(start=time.perf_counter(), prompt_tokens=len(prompt))
    try:
        stream = await engine.submit(prompt, params)
        async with stream:
            async for item in stream:
                now = time.perf_counter()
                if item.error is not None:
                    record.error = item.error
                    break
                new = len(item.deltas[0].token_ids)
                if new:
                    if record.first is None:
                        record.first = now
                    record.events.append((now, new))
                    record.output_tokens += new
    except RequestError as error:
        record.error = str(error)
    record.end = time.perf_counter()
    if bar is not None:
        bar.update(1)
    return record


def percentiles(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    array = np.asarray(values) * 1000.0  # ms
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"mean": float(array.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def summarize(records: list[RequestRecord], duration: float, stats: dict[str, Any]) -> dict[str, Any]:
    done = [r for r in records if r.error is None and r.end is not None]
    output_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    duration = max(duration, 1e-9)
    ttft = [r.first - r.start for r in done if r.first is not None]
    e2e = [r.end - r.start for r in done]
    tpot = [
        (r.end - r.first) / (r.output_tokens - 1) for r in done if r.first is not None and r.output_tokens > 1
    ]
    return {
        "num_prompts": len(records),
        "completed": len(done),
        "failed": len(records) - len(done),
        "duration_s": duration,
        "requests_per_s": len(done) / duration,
        "output_tokens": output_tokens,
        "output_tokens_per_s": output_tokens / duration,
        "total_tokens_per_s": (prompt_tokens + output_tokens) / duration,
        "ttft_ms": percentiles(ttft),
        "tpot_ms": percentiles(tpot),
        "e2e_ms": percentiles(e2e),
        "preemptions": int(stats.get("num_preemptions", 0)),
    }


def workload_title(args: argparse.Namespace) -> str:
    rate = "all at once" if math.isinf(args.request_rate) else f"{args.request_rate:g} req/s"
    return f"{args.num_prompts} requests, {args.input_len} in / {args.output_len} out tokens, {rate}"


def format_table(results: dict[str, Any], args: argparse.Namespace) -> str:
    import torch

    lines = [
        f"loomlm bench: {workload_title(args)}",
        f"model {args.model or 'SmolLM2-135M-Instruct (default)'}; torch threads {torch.get_num_threads()}",
        "",
        f"{'requests completed':<22}{results['completed']:>12} ({results['failed']} failed)",
        f"{'duration (s)':<22}{results['duration_s']:>12.2f}",
        f"{'requests/s':<22}{results['requests_per_s']:>12.2f}",
        f"{'output tokens/s':<22}{results['output_tokens_per_s']:>12.1f}",
        f"{'total tokens/s':<22}{results['total_tokens_per_s']:>12.1f}",
        f"{'preemptions':<22}{results['preemptions']:>12}",
        "",
        f"{'latency (ms)':<22}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for name, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("end to end", "e2e_ms")):
        row = results[key]
        cells = "".join(
            f"{'-':>10}" if row[q] is None else f"{row[q]:>10.1f}" for q in ("mean", "p50", "p90", "p99")
        )
        lines.append(f"{name:<22}{cells}")
    return "\n".join(lines) + "\n"
