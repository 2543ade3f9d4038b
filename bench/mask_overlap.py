"""Grammar mask fill beside the model forward: engine step time with the overlap on and off.

With the overlap on (``StructuredOutputManager(overlap_fill=True)``, or LOOMLM_OVERLAP_FILL=1) a
step starts filling its constrained rows' bitmask on the manager's worker thread before
``runner.execute`` and joins before sampling; off (the default), it fills after the forward on the
engine's thread.

Workload: ``--batch`` (32) requests, all constrained by one nested JSON Schema (an order: a
customer with an address, a list of items with tags), greedy, ``max_tokens=--max-tokens``, chat
prompts of 40-120 text tokens (fixed seed), ``max_num_seqs=--batch``; for each grammar backend
(llguidance, outlines) and each model: the tiny random Llama of ``tests/conftest.py`` (2 layers,
hidden 64, SmolLM2's 49k vocabulary: the forward is cheap, the fill is a large share) and
SmolLM2-135M-Instruct (``loomlm.LLM()``'s default). One engine per model and backend; the overlap is
switched on the same engine between runs, in interleaved order (on/off, then off/on, ...), after
one warm-up run each (grammar compile, prefix cache). Every run generates the same tokens (checked).

Measured per run: wall time of the whole batch, engine steps, and the per-step median; in the
"off" runs also the time spent in ``runner.execute`` and in ``fill_bitmask`` per step (what the
overlap can hide at most: the smaller of the two; on ``--device cuda`` the forward time is the
launch time, the GPU runs on). Medians over ``--repeats`` runs; the ratio is on / off (below 1: the
overlap is faster). ``--threads`` sets torch's thread count (0: its default).

    .venv/bin/python bench/mask_overlap.py --quick            # smoke test (not a measurement)
    .venv/bin/python bench/mask_overlap.py --write-results    # several minutes on 2 cores
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
from importlib.metadata import version
from pathlib import Path

import torch
from bench_common import cpu_model, passages, write_results
from corpus_generate import build_tiny_llama

from loomlm.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from loomlm.engine.engine import LLMEngine
from loomlm.engine.model_files import default_model_dir
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.compiler import CompilerConfig

ADDRESS = {
    "type": "object",
    "properties": {
        "street": {"type": "string", "maxLength": 24},
        "city": {"type": "string", "maxLength": 16},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
    },
    "required": ["street", "city", "zip"],
    "additionalProperties": False,
}
ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 20}, "address": ADDRESS},
            "required": ["name", "address"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 8},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                    "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["new", "sale", "gift"]}},
                },
                "required": ["sku", "qty", "tags"],
                "additionalProperties": False,
            },
        },
        "paid": {"type": "boolean"},
    },
    "required": ["id", "customer", "items", "paid"],
    "additionalProperties": False,
}
BACKENDS = ("llguidance", "outlines")
MODES = (("on", True), ("off", False))


class StepTimer:
    """Wraps the engine's forward and (synchronous) fill to time them; only the "off" runs call
    ``fill_bitmask`` (the overlap fills on the worker thread)."""

    def __init__(self, engine: LLMEngine) -> None:
        self.forward = self.fill = 0.0
        runner, manager = engine.executor, engine.structured_output
        execute, fill_bitmask = runner.execute, manager.fill_bitmask

        def timed_execute(model_input):
            start = time.perf_counter()
            try:
                return execute(model_input)
            finally:
                self.forward += time.perf_counter() - start

        def timed_fill(requests):
            start = time.perf_counter()
            try:
                return fill_bitmask(requests)
            finally:
                self.fill += time.perf_counter() - start

        runner.execute, manager.fill_bitmask = timed_execute, timed_fill

    def reset(self) -> None:
        self.forward = self.fill = 0.0


def make_prompts(engine: LLMEngine, count: int, seed: int) -> list[list[int]]:
    tokenizer = engine.tokenizer
    rng = random.Random(seed)
    text_ids = tokenizer(passages(), add_special_tokens=False).input_ids
    prompts = []
    for _ in range(count):
        length = rng.randint(40, 120)
        start = rng.randrange(0, len(text_ids) - length)
        messages = [
            {"role": "system", "content": "Write the order described in the text as JSON."},
            {"role": "user", "content": tokenizer.decode(text_ids[start : start + length])},
        ]
        prompts.append(engine.processor.apply_chat_template(messages))
    return prompts


def run(engine: LLMEngine, timer: StepTimer, prompts, params: SamplingParams, overlap: bool) -> dict:
    engine.structured_output.overlap_fill = overlap
    for i, prompt in enumerate(prompts):
        engine.add_request(prompt, params, request_id=str(i), prompt_token_ids=prompt)
    timer.reset()
    steps, tokens = [], {}
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        step_start = time.perf_counter()
        outputs = engine.step()
        steps.append(time.perf_counter() - step_start)
        tokens.update({o.request_id: tuple(o.outputs[0].token_ids) for o in outputs if o.finished})
    wall = time.perf_counter() - start
    return {
        "wall": wall,
        "steps": len(steps),
        "step_median": statistics.median(steps),
        "forward": timer.forward / len(steps),
        "fill": timer.fill / len(steps),
        "tokens": tokens,
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", default="tiny,smollm2")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the fill then overlaps a GPU forward)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="4 requests, 8 tokens, 1 repeat (smoke test)")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.batch, args.max_tokens, args.repeats = 4, 8, 1
    args.models, args.backends = args.models.split(","), args.backends.split(",")
    return args


def measure(model_dir: str, backend: str, args) -> dict:
    engine = LLMEngine(
        EngineConfig(
            model=model_dir,
            device=args.device,
            scheduler=SchedulerConfig(
                max_num_seqs=args.batch, max_num_batched_tokens=4096, max_model_len=512
            ),
            cache=CacheConfig(num_blocks=args.batch * 512 // 16 + 64),
            grammar=CompilerConfig(cache_dir=None, timeout_s=120),
            grammar_backend=backend,
        )
    )
    try:
        timer = StepTimer(engine)
        prompts = make_prompts(engine, args.batch, args.seed)
        params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, response_format=ORDER_SCHEMA)
        reference = run(engine, timer, prompts, params, False)["tokens"]  # warm-up: compile, prefix cache
        run(engine, timer, prompts, params, True)
        runs: dict[str, list[dict]] = {name: [] for name, _ in MODES}
        for repeat in range(args.repeats):
            for name, overlap in MODES if repeat % 2 == 0 else MODES[::-1]:
                result = run(engine, timer, prompts, params, overlap)
                if result["tokens"] != reference:
                    raise AssertionError(f"overlap={overlap} generated other tokens than the reference run")
                runs[name].append(result)
                print(
                    f"  {backend} overlap {name}: {result['wall'] * 1e3:.0f} ms, {result['steps']} steps, "
                    f"step median {result['step_median'] * 1e3:.2f} ms"
                )
        return {
            "runs": runs,
            "tokens": sum(len(t) for t in reference.values()),
            "paired": statistics.median(
                on["wall"] / off["wall"] for on, off in zip(runs["on"], runs["off"], strict=True)
            ),
        }
    finally:
        engine.close()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    smollm2_dir = default_model_dir()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dirs = {"smollm2": str(smollm2_dir)}
        if "tiny" in args.models:
            model_dirs["tiny"] = str(build_tiny_llama(Path(tmp), smollm2_dir))
        for model in args.models:
            for backend in args.backends:
                print(f"{model} / {backend}")
                results[model, backend] = measure(model_dirs[model], backend, args)

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    lines = [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}; llguidance {version('llguidance')}; outlines-core "
        f"{version('outlines-core')}; Python {platform.python_version()}; load average {load_start:.1f} at "
        f"start, {os.getloadavg()[0]:.1f} at end; {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Workload: {args.batch} requests under one nested JSON Schema (order: customer, address, items "
        f"with tags), greedy, max_tokens={args.max_tokens}, jump_forward on, float32 on "
        f"{args.device}; one engine per "
        f"row, overlap switched between runs; medians of {args.repeats} interleaved runs per side after "
        "a warm-up each; every run generated the same tokens",
        "- tiny: the random 2-layer Llama of tests/conftest.py (hidden 64, 49k vocab); smollm2: "
        "SmolLM2-135M-Instruct",
        "",
        "| model | backend | steps | forward ms/step (off) | fill ms/step (off) | off: wall ms | on: wall ms "
        "| on / off wall | on / off paired | off: step p50 ms | on: step p50 ms | on / off step p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (model, backend), result in results.items():
        on, off = result["runs"]["on"], result["runs"]["off"]
        lines.append(
            f"| {model} | {backend} | {med(off, 'steps'):.0f} | {med(off, 'forward') * 1e3:.2f} | "
            f"{med(off, 'fill') * 1e3:.2f} | {med(off, 'wall') * 1e3:.0f} | {med(on, 'wall') * 1e3:.0f} | "
            f"{med(on, 'wall') / med(off, 'wall'):.3f} | {result['paired']:.3f} | "
            f"{med(off, 'step_median') * 1e3:.2f} | {med(on, 'step_median') * 1e3:.2f} | "
            f"{med(on, 'step_median') / med(off, 'step_median'):.3f} |"
        )
    lines += ["", "on / off < 1: the overlap is faster. Paired: median over rounds of on / off wall time."]
    report = "\n".join(lines)
    print("\n" + report)
    if args.write_results:
        write_results("mask_overlap", report, args.quick)


if __name__ == "__main__":
    main()
