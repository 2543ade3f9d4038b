"""Structured output cost: constrained vs unconstrained decoding, grammar compile times, mask fill.

What is measured (default model SmolLM2-135M-Instruct, float32, CPU; greedy):

* **Throughput**: ``--batch-sizes`` (1 and 64) prompts of real English text (stdlib docstrings,
  64-192 tokens, fixed seed), each asked for a list of people. Constrained requests use a JSON
  Schema (an array of 1-64 objects with a bounded name, an age 0-120 and a city enum) with
  ``max_tokens=--max-tokens``; unconstrained requests use the same prompts with ``ignore_eos`` and
  exactly as many new tokens as each one's constrained counterpart produced (so the batch shrinks
  alike in both runs as requests finish). Generated tok/s = output tokens / wall time. The two runs alternate
  ``--repeats`` (3) times; medians are reported, and the ratio constrained / unconstrained
  (target: >= 0.95 at batch 64). Grammars are compiled before timing starts.
* **Compile time**: a corpus of ``--num-schemas`` (>= 50) varied schemas (Pydantic models, nested
  objects, arrays, enums, formats, numeric bounds, refs, anyOf) on the real 49k vocabulary.
  Cold: a fresh compiler without caches (translation + Index in the worker process, the worker
  already started). Warm: the same schemas again (memory-cache hits). p50 / p99 / max in ms.
* **Mask fill**: replaying the constrained outputs token by token, microseconds to fill one
  bitmask row (per token), p50 / p99; and the apply kernel's time per step at batch 64.

Run from the repository root on an idle machine:

    .venv/bin/python bench/structured.py --quick            # smoke test (not a measurement)
    .venv/bin/python bench/structured.py                    # the measurement (several minutes)
    .venv/bin/python bench/structured.py --write-results    # also replace its section in RESULTS.md

``--corpus DIR`` runs ``grammar_corpus.py`` instead: every grammar backend over a JSONSchemaBench
folder (coverage, cold compile, mask fill, validity); its own options (``--outlines-timeout``...)
pass through.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import time

import numpy as np
import torch
import transformers
from bench_common import cpu_model, passages, write_results
from schema_corpus import schema_corpus

from loomlm import LLM, SamplingParams
from loomlm.grammar.compiler import CompilerConfig, GrammarCompiler
from loomlm.grammar.errors import GrammarError
from loomlm.grammar.specs import resolve_response_format
from loomlm.grammar.state import IndexGrammarState
from loomlm.kernels.token_bitmask import apply_token_bitmask

CITIES = ["Boston", "Madrid", "Tokyo", "Paris", "Lagos", "Lima", "Oslo", "Delhi"]
PEOPLE_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "maxItems": 64,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"enum": CITIES},
        },
        "required": ["name", "age", "city"],
        "additionalProperties": False,
    },
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-schemas", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes for smoke testing")
    p.add_argument("--write-results", action="store_true")
    p.add_argument(
        "--corpus",
        metavar="DIR",
        help="instead: the grammar backends over a JSONSchemaBench folder (grammar_corpus.py; "
        "options not listed here go to it)",
    )
    args, rest = p.parse_known_args()
    args.rest = rest
    if rest and not args.corpus:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.quick:
        args.batch_sizes, args.max_tokens, args.repeats, args.num_schemas = "1,4", 16, 1, 8
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    return args


def make_prompts(llm: LLM, count: int, seed: int) -> list[list[int]]:
    tokenizer = llm.tokenizer
    rng = random.Random(seed)
    text_ids = tokenizer(passages(), add_special_tokens=False).input_ids
    prompts = []
    for _ in range(count):
        length = rng.randint(64, 192)
        start = rng.randrange(0, len(text_ids) - length)
        body = tokenizer.decode(text_ids[start : start + length])
        messages = [
            {"role": "system", "content": "List the people mentioned in the text as JSON."},
            {"role": "user", "content": body},
        ]
        prompts.append(llm.engine.processor.apply_chat_template(messages))
    return prompts


def throughput(llm: LLM, prompts, params: SamplingParams) -> tuple[float, int, list]:
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return tokens / elapsed, tokens, outputs


def compile_times(llm: LLM, schemas: list, cold: bool) -> tuple[list[float], list[str]]:
    manager = llm.engine.structured_output
    compiler = (
        GrammarCompiler(manager.vocabulary, CompilerConfig(cache_dir=None)) if cold else manager.compiler
    )
    if cold:
        compiler.submit("warm-up").result()  # start the worker process outside the timings
    times, failures = [], []
    for schema in schemas:
        start = time.perf_counter()
        spec = resolve_response_format(schema)
        try:
            compiler.submit(spec.regex, end_marker=spec.needs_end_marker).result()
        except GrammarError as error:  # over the time or memory limit: counted, not timed
            failures.append(str(error).split(";")[0])
            continue
        times.append((time.perf_counter() - start) * 1e3)
    if cold:
        compiler.close()
    return times, failures


def mask_fill_us(llm: LLM, outputs) -> list[float]:
    manager = llm.engine.structured_output
    vocab = manager.vocabulary
    spec = manager.resolve(PEOPLE_SCHEMA)
    compiled = manager.compiler.submit(spec.regex, end_marker=spec.needs_end_marker).result()
    row = np.zeros(vocab.mask_width_words, dtype=np.int32)
    samples = []
    for output in outputs:
        state = IndexGrammarState(
            compiled.index,
            vocab.eos_token_id,
            vocab.end_marker_token_id,
            uses_end_marker=compiled.uses_end_marker,
        )
        for token in output.outputs[0].token_ids:
            start = time.perf_counter_ns()
            state.fill_bitmask(row)
            samples.append((time.perf_counter_ns() - start) / 1e3)
            if not state.accept_token(token):
                break
    return samples


def apply_ms(vocab_size: int, num_words: int, rows: int, repeats: int = 20) -> float:
    logits = torch.randn(rows, vocab_size)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (rows, num_words), dtype=torch.int32)
    index = torch.arange(rows)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        apply_token_bitmask(logits, bitmask, index)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    args = parse_args()
    if args.corpus:
        import grammar_corpus

        flags = ["--quick"] * args.quick + ["--write-results"] * args.write_results
        grammar_corpus.main(["--corpus", args.corpus, "--seed", str(args.seed), *flags, *args.rest])
        return
    llm = LLM(max_num_seqs=max(args.batch_sizes), enable_prefix_caching=False)
    constrained = SamplingParams(temperature=0, max_tokens=args.max_tokens, response_format=PEOPLE_SCHEMA)
    rows = []
    people_outputs = []
    for batch in args.batch_sizes:
        prompts = make_prompts(llm, batch, args.seed + batch)
        # Warm-up (grammar compiled), and the length of each constrained output: the unconstrained
        # baseline generates exactly as many tokens per request, so both runs shrink alike at the end.
        _, _, warm_outputs = throughput(llm, prompts, constrained)
        free = [
            SamplingParams(temperature=0, max_tokens=max(1, len(o.outputs[0].token_ids)), ignore_eos=True)
            for o in warm_outputs
        ]
        free_runs, constrained_runs = [], []
        for _ in range(args.repeats):
            free_runs.append(throughput(llm, prompts, free)[0])
            rate, _, outputs = throughput(llm, prompts, constrained)
            constrained_runs.append(rate)
            people_outputs = outputs
        free_tps, con_tps = statistics.median(free_runs), statistics.median(constrained_runs)
        rows.append((batch, free_tps, con_tps, con_tps / free_tps))
        print(
            f"batch {batch}: unconstrained {free_tps:.1f} tok/s, constrained {con_tps:.1f} tok/s", flush=True
        )
    complete = sum(o.outputs[0].parsed is not None for o in people_outputs)

    schemas = schema_corpus(args.num_schemas)
    cold, cold_failures = compile_times(llm, schemas, cold=True)
    compile_times(llm, schemas, cold=False)  # fill the engine compiler's memory cache
    warm, _ = compile_times(llm, schemas, cold=False)
    fill = mask_fill_us(llm, people_outputs)
    vocab = llm.engine.structured_output.vocabulary
    apply = apply_ms(llm.engine.arch.vocab_size, vocab.mask_width_words, max(args.batch_sizes))

    lines = [
        f"- Machine: {cpu_model()}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}; transformers {transformers.__version__}; "
        f"Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        "- Throughput: SmolLM2-135M-Instruct, greedy, chat prompts of 64-192 text tokens, "
        f"max_tokens={args.max_tokens}; constrained = JSON Schema array of people objects; "
        f"unconstrained = ignore_eos, same output lengths; median of {args.repeats} alternating runs; "
        "last constrained batch: "
        f"{complete}/{len(people_outputs)} outputs complete and valid",
        "",
        "| batch | unconstrained tok/s | constrained tok/s | constrained / unconstrained |",
        "|---:|---:|---:|---:|",
        *[f"| {b} | {f:.1f} | {c:.1f} | {r:.3f} |" for b, f, c, r in rows],
        "",
        f"- Compile time over {len(schemas)} schemas (translation + outlines-core Index, 49k vocab), ms:",
        "",
        "| | p50 | p99 | max |",
        "|---|---:|---:|---:|",
        f"| cold (fresh compiler, no cache) | {pct(cold, 50):.1f} | {pct(cold, 99):.1f} | {max(cold):.1f} |",
        f"| warm (memory cache) | {pct(warm, 50):.3f} | {pct(warm, 99):.3f} | {max(warm):.3f} |",
        "",
        f"- Cold compiles that failed (limit: {CompilerConfig().timeout_s:g} s, "
        f"{CompilerConfig().memory_limit_bytes >> 30} GiB): {len(cold_failures)} of {len(schemas)}"
        + "".join(f"; {f}" for f in cold_failures),
        "",
        f"- Mask fill per token (one bitmask row, {len(fill)} tokens replayed): p50 {pct(fill, 50):.1f} us, "
        f"p99 {pct(fill, 99):.1f} us; apply kernel (torch reference, CPU) at batch {max(args.batch_sizes)}: "
        f"{apply:.2f} ms per step",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    if args.write_results:
        write_results("structured", report, args.quick)


if __name__ == "__main__":
    main()
