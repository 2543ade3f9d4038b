"""Jump-forward decoding: tokens per model step and wall time with ``jump_forward`` on and off.

Workload: ``--batch`` (32) extractions of a Pydantic ``Contact`` (ten keyed fields) from short
synthetic biographies (fixed seed), through the same prompt and sampling parameters as
``LLM.extract_batch`` (greedy, JSON Schema of the type, ``--max-tokens``), on SmolLM2-135M-Instruct
with the ``--backend`` grammar backend (default ``auto``: llguidance, whose ``compute_ff_tokens``
gives the forced tokens). Two engines with the same settings but ``jump_forward=True`` / ``False``
run the same batch in interleaved order (the first run of each is a warm-up: compile, caches),
``--repeats`` (3) times; medians are reported.

Measured per run: model steps (forward passes: ``runner.execute`` calls), sampled rows (one per
request per step that samples), output tokens, wall time. Tokens per sampled row is output tokens /
sampled rows (1.0 without jump-forward); the ratios on / off are of wall time and of model steps.
Outputs are compared item by item: both must be valid (complete, schema-valid) for the same items.

    .venv/bin/python bench/jump_forward.py --quick            # smoke test (not a measurement)
    .venv/bin/python bench/jump_forward.py --write-results    # a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import time
from importlib.metadata import version

import torch
from bench_common import cpu_model, write_results
from pydantic import BaseModel, Field

from loomlm import LLM
from loomlm.structured import extraction_messages, extraction_params

FIRST = ["Ana", "Bilal", "Chen", "Dara", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jules", "Kenji", "Lena"]
LAST = ["Souza", "Haddad", "Wei", "Okafor", "Lindqvist", "Petrov", "Tanaka", "Moreau", "Rossi", "Novak"]
TITLES = ["Chief Engineer", "Head of Sales", "Data Scientist", "Product Manager", "Staff Designer", "CFO"]
COMPANIES = ["Lumen Robotics", "Northwind", "Bluefin Labs", "Acme Freight", "Orbital Foods", "Kestrel AI"]
PLACES = [
    ("Porto", "Portugal"),
    ("Osaka", "Japan"),
    ("Lagos", "Nigeria"),
    ("Lyon", "France"),
    ("Graz", "Austria"),
]
RATIOS = (("wall", "wall time"), ("steps", "model steps"), ("rows", "sampled rows"))
SKILLS = ["Python", "negotiation", "Rust", "forecasting", "UX research", "SQL", "robotics", "accounting"]


class Contact(BaseModel):
    full_name: str = Field(max_length=40)
    job_title: str = Field(max_length=40)
    company: str = Field(max_length=40)
    city: str = Field(max_length=30)
    country: str = Field(max_length=30)
    email: str = Field(max_length=60)
    phone: str = Field(max_length=24)
    year_joined: int = Field(ge=1950, le=2030)
    is_manager: bool
    skills: list[str] = Field(max_length=4)


def biographies(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company, (city, country) = rng.choice(COMPANIES), rng.choice(PLACES)
        domain = company.split()[0].lower()
        skills = rng.sample(SKILLS, 2)
        texts.append(
            f"{first} {last} joined {company} in {rng.randint(1995, 2024)} as {rng.choice(TITLES)} and "
            f"{'leads a team of ' + str(rng.randint(3, 20)) if rng.random() < 0.5 else 'manages no one'}. "
            f"Based in {city}, {country}, {first} is known for {skills[0]} and {skills[1]}. "
            f"Contact: {first.lower()}.{last.lower()}@{domain}.com, +{rng.randint(10, 99)} "
            f"{rng.randint(100, 999)} {rng.randint(1000, 9999)}."
        )
    return texts


class StepCounter:
    """Counts the engine's model steps and sampled rows by wrapping ``executor.execute``."""

    def __init__(self, llm: LLM) -> None:
        self.steps = self.rows = 0
        executor = llm.engine.executor
        execute = executor.execute

        def counted(model_input):
            self.steps += 1
            self.rows += model_input.num_sampling_rows
            return execute(model_input)

        executor.execute = counted

    def reset(self) -> None:
        self.steps = self.rows = 0


def run(llm: LLM, counter: StepCounter, conversations, params) -> dict:
    counter.reset()
    start = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    wall = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    valid = [o.outputs[0].parsed is not None for o in outputs]
    return {
        "wall": wall,
        "steps": counter.steps,
        "rows": counter.rows,
        "tokens": tokens,
        "valid": valid,
        "texts": [o.outputs[0].text for o in outputs],
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backend", default="auto")
    p.add_argument("--kv-cache-bytes", type=int, default=3 << 29, help="per engine (two engines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="4 extractions, 1 repeat (smoke test)")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.batch, args.repeats = 4, 1
    return args


def main() -> None:
    args = parse_args()
    load_start = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    params = extraction_params(Contact, None, strict=True).model_copy(update={"max_tokens": args.max_tokens})
    conversations = [extraction_messages(Contact, text, None) for text in biographies(args.batch, args.seed)]
    engines = {}
    for on in (True, False):
        llm = LLM(
            max_num_seqs=args.batch,
            kv_cache_bytes=args.kv_cache_bytes,
            grammar_backend=args.backend,
            jump_forward=on,
        )
        engines[on] = (llm, StepCounter(llm))
        run(*engines[on], conversations, params)  # warm-up: grammar compile, first-touch allocations
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for on in (True, False) if repeat % 2 == 0 else (False, True):
            runs[on].append(run(*engines[on], conversations, params))
            last = runs[on][-1]
            print(f"jump_forward={on}: {last['wall']:.1f} s, {last['steps']} steps, {last['tokens']} tokens")
    med = {
        on: {key: statistics.median(r[key] for r in runs[on]) for key in ("wall", "steps", "rows", "tokens")}
        for on in (True, False)
    }
    paired = [a["wall"] / b["wall"] for a, b in zip(runs[True], runs[False], strict=True)]
    last_on, last_off = runs[True][-1], runs[False][-1]
    same_validity = sum(a == b for a, b in zip(last_on["valid"], last_off["valid"], strict=True))
    same_text = sum(a == b for a, b in zip(last_on["texts"], last_off["texts"], strict=True))
    lines = [
        f"- Machine: {cpu_model()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"llguidance {version('llguidance')}; Python {platform.python_version()}; load average "
        f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- Workload: {args.batch} extractions of a 10-field Pydantic model (extract_batch's prompt and "
        f"params: greedy, max_tokens={args.max_tokens}), SmolLM2-135M-Instruct, grammar_backend="
        f"{args.backend}, max_num_seqs={args.batch}; medians of {args.repeats} interleaved runs per side "
        "after one warm-up each",
        "",
        "| jump_forward | wall s (median) | wall s (min-max) | model steps | sampled rows | output tokens "
        "| tokens per sampled row | tokens per model step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {'on' if on else 'off'} | {m['wall']:.2f} | {min(r['wall'] for r in runs[on]):.2f}-"
            f"{max(r['wall'] for r in runs[on]):.2f} | {m['steps']:.0f} | {m['rows']:.0f} | "
            f"{m['tokens']:.0f} | {m['tokens'] / m['rows']:.2f} | {m['tokens'] / m['steps']:.2f} |"
            for on, m in med.items()
        ],
        "",
        "- on / off: "
        + ", ".join(f"{name} {med[True][key] / med[False][key]:.3f}" for key, name in RATIOS)
        + f"; wall time paired by round (median of {args.repeats}): {statistics.median(paired):.3f}",
        f"- Preemptions: on {engines[True][0].engine.stats()['num_preemptions']}, "
        f"off {engines[False][0].engine.stats()['num_preemptions']}",
        f"- Valid outputs (last run): on {sum(last_on['valid'])}/{args.batch}, off "
        f"{sum(last_off['valid'])}/{args.batch}; same validity item by item: {same_validity}/{args.batch}; "
        f"identical text: {same_text}/{args.batch}",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    if args.write_results:
        write_results("jump_forward", report, args.quick)


if __name__ == "__main__":
    main()
