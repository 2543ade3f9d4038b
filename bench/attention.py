"""Prefill attention on the CPU: loomlm's C++ kernel (one call for every chunk of the step, read
straight from the paged cache) against the path it replaces (one fused SDPA call per sequence after
a K/V gather and GQA expansion; chunks of at most 16 tokens as rows of the decode kernel), in one run.

SmolLM2's attention shape (9 query heads over 3 kv heads, head_dim 64, blocks of 16), one layer, a
step of about 2048 new tokens: chunks of a mean length uniform in [mean/2, 3*mean/2] (fresh prompts,
or after a cached context). Medians of ``--repeats`` interleaved rounds; same threads for both. The
largest difference between the two outputs is printed beside the times.

    .venv/bin/python bench/attention.py --write-results
"""

from __future__ import annotations

import argparse
import datetime
import functools
import random

import torch
from bench_common import cpu_model, median_ms_interleaved, write_results

from loomlm.kernels import cpu_ops
from loomlm.kernels.paged_attention import NATIVE_PREFILL_MAX_ROWS, NATIVE_ROWS_CHUNK, _attend_on_cpu

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16
CASES = ((16, 0), (32, 0), (64, 0), (128, 0), (256, 0), (512, 0), (128, 1024), (2048, 0))


def step(mean_chunk: int, context: int, seed: int = 0):
    rng = random.Random(seed)
    num_seqs = max(1, 2048 // mean_chunk)
    q_lens = [
        rng.randint(mean_chunk // 2, 3 * mean_chunk // 2) if num_seqs > 1 else mean_chunk
        for _ in range(num_seqs)
    ]
    seq_lens = [q + context for q in q_lens]
    blocks = [-(-n // BLOCK) for n in seq_lens]
    key_cache = torch.randn(sum(blocks), BLOCK, KV_HEADS, HEAD_DIM)
    value_cache = torch.randn_like(key_cache)
    tables = torch.zeros(num_seqs, max(blocks), dtype=torch.int32)
    first = 0
    for s, n in enumerate(blocks):
        tables[s, :n] = torch.arange(first, first + n, dtype=torch.int32)
        first += n
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    query = torch.randn(sum(q_lens), HEADS, HEAD_DIM)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    return (query, key_cache, value_cache, tables, lens, starts), max(q_lens), max(seq_lens)


def decode_rows(query, key_cache, value_cache, tables, lens, scale, max_len, workspace):
    return cpu_ops.decode_attention(query, key_cache, value_cache, tables, lens, scale)


def per_sequence_sdpa(tensors, max_q: int, max_len: int, scale: float) -> torch.Tensor:
    """The path the C++ kernel replaced (still the engine's for chunks past its limit)."""
    return _attend_on_cpu(*tensors, scale, max_q, max_len, None, decode_rows, NATIVE_ROWS_CHUNK)


def measure(mean_chunk: int, context: int, repeats: int, scale: float) -> str:
    tensors, max_q, max_len = step(mean_chunk, context)
    runs = {
        "sdpa": functools.partial(per_sequence_sdpa, tensors, max_q, max_len, scale),
        "loomlm": functools.partial(cpu_ops.prefill_attention, *tensors, scale),
    }
    diff = (runs["sdpa"]() - runs["loomlm"]()).abs().max().item()
    ms = median_ms_interleaved(runs, repeats)
    num_seqs = tensors[4].numel()
    return (
        f"| {mean_chunk} | {context} | {num_seqs} | {ms['sdpa']:.2f} | {ms['loomlm']:.2f} | "
        f"{ms['sdpa'] / ms['loomlm']:.2f}x | {diff:.1e} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if not cpu_ops.prefill_attention_available():
        raise SystemExit("loomlm._C is not built or this CPU has no AVX2/FMA: nothing to compare")
    scale = HEAD_DIM**-0.5
    lines = [
        "| chunk mean | context | sequences | per-sequence SDPA ms | loomlm C++ ms | speedup | max diff |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mean_chunk, context in CASES:
        lines.append(measure(mean_chunk, context, args.repeats, scale))
        print(lines[-1], flush=True)
    header = (
        f"{datetime.date.today()} · {cpu_model()} (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}) · {torch.get_num_threads()} threads · torch "
        f"{torch.__version__} · one layer, ~2048 new tokens a step · medians of {args.repeats} interleaved "
        f"rounds · the engine uses the C++ kernel for steps whose longest chunk is at most "
        f"{NATIVE_PREFILL_MAX_ROWS} tokens\n\n"
    )
    text = header + "\n".join(lines) + "\n"
    print("\n" + text)
    if args.write_results:
        write_results("attention", text, quick=False)


if __name__ == "__main__":
    main()
