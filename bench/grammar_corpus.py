"""Grammar backends over real-world schemas: coverage, cold compile time, mask fill and validity.

Over a JSONSchemaBench folder (``--corpus``: ``{"description", "meta", "schema"}`` files, subsets
by file-name prefix), for each backend choice ``outlines``, ``llguidance`` and ``auto``, in one run:

* **Coverage**: schemas the backend accepts (prepare and compile both succeed), per subset and in
  total; refusals grouped by reason (error class and keyword, or the message's first words).
* **Cold compile**: prepare + compile in ms, caches cold (the outlines worker process and the
  llguidance tokenizer already built; each grammar dropped from the memory caches first), p50 /
  p99 / max over the accepted schemas. A compile past ``--outlines-timeout`` is a refusal.
* **Mask fill**: along a random valid path through each accepted grammar (at most 64 tokens, see
  ``corpus_measure.MaskWalker``), microseconds per ``fill_bitmask`` of one row, p50 / p99.
* **Validity**: the tiny random Llama at temperature 1, ``--seeds`` samples per schema accepted by
  auto (``--other-seeds`` for llguidance and outlines), and SmolLM2-135M-Instruct greedy on
  ``--smol-schemas`` of them (schema in the prompt); every finished output is checked with
  jsonschema (``corpus_generate.classify``). ``length`` outputs stopped at max_tokens and are not
  judged; 0 invalid is the target.

Targets: auto compile p50 < 10 ms and p99 < 500 ms; auto coverage >= llguidance's; 0 invalid.

    .venv/bin/python bench/grammar_corpus.py --corpus /work/shared/data/jsonschemabench-dev --quick
    .venv/bin/python bench/grammar_corpus.py --corpus DIR --outlines-timeout 5 --write-results
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import tempfile
import time
import zlib
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import torch
from bench_common import cpu_model, write_results
from corpus_generate import OUTCOMES, build_tiny_llama, make_llm, smol_validity, spread_sample, tiny_validity
from corpus_measure import MaskWalker, cold_compile, load_corpus, percentile
from transformers import AutoTokenizer

from loomlm.engine.model_files import default_model_dir
from loomlm.grammar.backends.llguidance import LlguidanceBackend
from loomlm.grammar.backends.outlines import OutlinesBackend
from loomlm.grammar.compiler import CompilerConfig
from loomlm.grammar.disk_cache import GrammarDiskCache
from loomlm.grammar.specs import resolve_response_format
from loomlm.grammar.vocabulary import TokenVocabulary

CHOICES = ("outlines", "llguidance", "auto")
VOCAB_SIZE = 49152
TINY_KV, SMOL_KV = {"kv_cache_bytes": 1 << 28}, {"kv_cache_bytes": 1 << 30}
# Requests per generate call: each holds its compiled grammar until it finishes (outlines automata
# here average ~10 MB and reach ~140 MB), so the schemas go in chunks.
TINY_BATCH = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="a JSONSchemaBench folder of {'schema': ...} files")
    p.add_argument("--per-subset", type=int, default=None, help="only the first N schemas of each subset")
    p.add_argument("--outlines-timeout", type=float, default=30.0, help="outlines limit, s (engine: 30)")
    p.add_argument("--seeds", type=int, default=2, help="tiny-model samples per schema accepted by auto")
    p.add_argument("--other-seeds", type=int, default=1, help="the same for llguidance and outlines")
    p.add_argument("--tiny-max-tokens", type=int, default=128)
    p.add_argument("--tiny-backends", default="auto,llguidance,outlines")
    p.add_argument("--smol-schemas", type=int, default=24)
    p.add_argument("--smol-max-tokens", type=int, default=384)
    p.add_argument("--smol-backends", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="2 schemas per subset, small runs (smoke test)")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.per_subset = args.per_subset or 2
        args.seeds, args.other_seeds, args.tiny_max_tokens = 2, 1, 64
        args.smol_schemas, args.smol_max_tokens = 4, 64
        args.outlines_timeout = min(args.outlines_timeout, 10.0)
    args.tiny_backends = [b for b in args.tiny_backends.split(",") if b]
    args.smol_backends = [b for b in args.smol_backends.split(",") if b]
    return args


def measure_compiles(args, entries, tokenizer, vocab, cache_dir: Path) -> dict[str, dict]:
    """Cold compile + mask walk of every schema with every backend choice. Outlines grammars are
    written to ``cache_dir`` (after their timing) so the generation engines start warm."""
    backends = {
        "llguidance": LlguidanceBackend(tokenizer, VOCAB_SIZE),
        "outlines": OutlinesBackend(
            vocab, CompilerConfig(cache_dir=None, timeout_s=args.outlines_timeout, memory_cache_size=0)
        ),
    }
    backends["outlines"].compiler.submit("warm-up").result()  # start the worker outside the timings
    warm = backends["llguidance"].prepare(resolve_response_format({"type": "object"}))
    backends["llguidance"].submit(warm).result()  # build the LLTokenizer outside the timings
    disk, written = GrammarDiskCache(cache_dir), set()
    walker = MaskWalker(tokenizer, VOCAB_SIZE, vocab.eos_token_id, vocab.mask_width_words)
    results: dict[str, dict] = {}
    for choice in CHOICES:
        start = time.perf_counter()
        results[choice] = {}
        for entry in entries:
            if entry.spec is None:
                continue
            result = cold_compile(backends, choice, entry.spec)
            if result.ok:
                state = backends[result.backend].new_state(result.compiled)
                rng = random.Random(zlib.crc32(entry.name.encode()) + args.seed)
                result.mask_us = walker.walk(state, rng)
                if result.backend == "outlines" and result.compiled.key not in written:
                    disk.write(result.compiled.key, result.compiled.index)
                    written.add(result.compiled.key)
                result.compiled = None  # big automata: keep only the numbers
            results[choice][entry.name] = result
        accepted = sum(r.ok for r in results[choice].values())
        elapsed = time.perf_counter() - start
        print(f"{choice}: {accepted}/{len(entries)} accepted, {elapsed:.0f} s", flush=True)
    for backend in backends.values():
        backend.close()
    results["_walker"] = {"errors": walker.walk_errors, "terminated": walker.terminated}
    return results


def run_generation(args, entries, results, cache_dir: Path) -> tuple[dict, dict, list[str]]:
    """Validity counts per backend: tiny model (all accepted schemas) and SmolLM2 (a sample)."""
    by_name = {e.name: e for e in entries}
    tiny, smol, problems = {}, {}, []
    smol_dir = default_model_dir()
    with tempfile.TemporaryDirectory(prefix="loomlm-tiny-") as tiny_dir:
        build_tiny_llama(Path(tiny_dir), Path(smol_dir))
        for choice in args.tiny_backends:
            names = [n for n, r in results[choice].items() if r.ok]
            items = [(n, by_name[n].schema) for n in names]
            seeds = args.seeds if choice == "auto" else args.other_seeds
            batch = {"max_num_seqs": TINY_BATCH, **TINY_KV}
            llm = make_llm(tiny_dir, choice, cache_dir, args.outlines_timeout, seed=args.seed, **batch)
            start = time.perf_counter()
            chunk = max(1, TINY_BATCH // seeds)
            tiny[choice], found = tiny_validity(llm, items, seeds, args.tiny_max_tokens, chunk)
            llm.engine.close()
            problems += [f"tiny/{choice}: {p}" for p in found]
            print(f"tiny {choice}: {dict(tiny[choice])}, {time.perf_counter() - start:.0f} s", flush=True)
    sample = spread_sample([n for n, r in results["auto"].items() if r.ok], args.smol_schemas)
    for choice in args.smol_backends if sample else ():
        names = [n for n in sample if results[choice][n].ok]
        llm = make_llm(None, choice, cache_dir, args.outlines_timeout, max_num_seqs=32, **SMOL_KV)
        start = time.perf_counter()
        items = [(n, by_name[n].schema) for n in names]
        smol[choice], found = smol_validity(llm, items, args.smol_max_tokens)
        llm.engine.close()
        problems += [f"smol/{choice}: {p}" for p in found]
        print(f"smol {choice}: {dict(smol[choice])}, {time.perf_counter() - start:.0f} s", flush=True)
    return tiny, smol, problems


def counts_cell(counts: Counter | None) -> str:
    if counts is None:
        return "not run"
    cell = " / ".join(str(counts[o]) for o in OUTCOMES[:3])
    extra = [f"{counts[o]} {o}" for o in OUTCOMES[3:] if counts[o]]
    return cell + (f" ({', '.join(extra)})" if extra else "")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(args, entries, results, tiny, smol, problems) -> str:
    total = len(entries)
    subsets = sorted({e.subset for e in entries})
    lines = [
        f"- Machine: {cpu_model()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"llguidance {version('llguidance')}; outlines-core {version('outlines_core')}; "
        f"jsonschema {version('jsonschema')}; Python {platform.python_version()}; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}; load average {args.load_start:.1f} "
        f"at start, {os.getloadavg()[0]:.1f} at end (a shared machine: timings are inflated by other work)",
        f"- Corpus: {total} JSONSchemaBench schemas ({len(subsets)} subsets) from `{args.corpus}`"
        + (f", first {args.per_subset} per subset" if args.per_subset else ""),
        f"- Cold compile = prepare + compile, SmolLM2 49k vocabulary; outlines compile limit "
        f"{args.outlines_timeout:g} s"
        + (
            " (the engine's 30 s)"
            if args.outlines_timeout == 30
            else " (lowered from the engine's 30 s to keep the run short)"
        )
        + "; a compile past it counts as refused",
        f"- Mask: one row's fill_bitmask along a random valid path (<= 64 tokens) per accepted schema; "
        f"walks ended by the grammar: {results['_walker']['terminated']}, "
        f"walk errors (allowed token refused): {results['_walker']['errors']}",
        f"- Validity (valid / length / invalid): tiny random Llama, temperature 1, {args.seeds} samples per "
        f"schema accepted by auto ({args.other_seeds} for llguidance and outlines; engine seed {args.seed}), "
        f"max_tokens={args.tiny_max_tokens}; SmolLM2-135M-Instruct greedy on "
        f"{args.smol_schemas} schemas spread over the subsets (those auto accepts; schema in the prompt), "
        f"max_tokens={args.smol_max_tokens}; jsonschema Draft 2020-12 with its format checker",
        "",
        "| backend | accepted | compile p50 ms | p99 ms | max ms | prepare p50 / p99 ms | mask p50 µs "
        "| mask p99 µs | tiny valid / length / invalid | SmolLM2 valid / length / invalid |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for choice in CHOICES:
        ok = [r for r in results[choice].values() if r.ok]
        ms, prep = [r.ms for r in ok], [r.prepare_ms for r in ok]
        mask, top = [u for r in ok for u in r.mask_us], max(ms, default=float("nan"))
        lines.append(
            f"| {choice} | {len(ok)}/{total} | {percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} "
            f"| {top:.1f} | {percentile(prep, 50):.1f} / {percentile(prep, 99):.1f} "
            f"| {percentile(mask, 50):.1f} | {percentile(mask, 99):.1f} "
            f"| {counts_cell(tiny.get(choice))} | {counts_cell(smol.get(choice))} |"
        )
    auto_ok = [r for r in results["auto"].values() if r.ok]
    taken = Counter(r.backend for r in auto_ok)
    llg_only = [n for n, r in results["llguidance"].items() if r.ok and not results["auto"][n].ok]
    lines += [
        "",
        f"auto took {taken['llguidance']} schemas with llguidance and {taken['outlines']} with the outlines "
        f"fallback; schemas llguidance accepts but auto refuses: {len(llg_only)}"
        + (f" ({', '.join(llg_only[:5])})" if llg_only else ""),
        "",
        "| subset | " + " | ".join(CHOICES) + " |",
        "|---|" + "---:|" * len(CHOICES),
    ]
    for subset in subsets:
        names = [e.name for e in entries if e.subset == subset]
        cells = [f"{sum(results[c][n].ok for n in names if n in results[c])}/{len(names)}" for c in CHOICES]
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    lines += ["", "Refusals by reason (count):", ""]
    for choice in CHOICES:
        reasons = Counter(r.reason for r in results[choice].values() if not r.ok)
        reasons.update(e.spec_error for e in entries if e.spec is None)
        top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(10))
        rest = sum(reasons.values()) - sum(n for _, n in reasons.most_common(10))
        lines.append(f"- {choice} ({sum(reasons.values())}): {top}" + (f", other {rest}" if rest else ""))
    p50, p99 = percentile([r.ms for r in auto_ok], 50), percentile([r.ms for r in auto_ok], 99)
    llg_count = sum(r.ok for r in results["llguidance"].values())
    invalid = sum(c["invalid"] for c in [*tiny.values(), *smol.values()])
    lines += [
        "",
        f"Targets: auto compile p50 {p50:.1f} ms (< 10: {_met(p50 < 10)}), p99 {p99:.1f} ms "
        f"(< 500: {_met(p99 < 500)}); auto coverage {len(auto_ok)} >= llguidance {llg_count}: "
        f"{_met(len(auto_ok) >= llg_count)}; invalid outputs {invalid} (0: {_met(invalid == 0)})",
    ]
    if problems:
        lines += ["", "Invalid or failed outputs (first 10):", "", *[f"- `{p}`" for p in problems[:10]]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.load_start = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = load_corpus(args.corpus, args.per_subset)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    vocab = TokenVocabulary.from_tokenizer(tokenizer, VOCAB_SIZE)
    with tempfile.TemporaryDirectory(prefix="loomlm-grammar-cache-") as cache_dir:
        results = measure_compiles(args, entries, tokenizer, vocab, Path(cache_dir))
        tiny, smol, problems = run_generation(args, entries, results, Path(cache_dir))
    text = report(args, entries, results, tiny, smol, problems)
    print("\n" + text)
    if args.write_results:
        write_results("grammar_corpus", text, args.quick)


if __name__ == "__main__":
    main()
