"""Decode attention on the CPU at a decode step's shapes: loomlm's C++ kernel (read straight from the
paged cache) against torch's path over the same cache (`cpu_ops.decode_attention_ref`: a K/V gather,
then batched matmuls and softmax), and against the memory roof measured in the same run: one
sequential read of as many bytes (a sum over a contiguous tensor); and the kernel over the same cache
in bfloat16 (``kv_cache_dtype="bfloat16"``: half the bytes).

SmolLM2's attention shape (9 query heads over 3 kv heads, head_dim 64, blocks of 16). Each case runs
``--layers`` layers, each with its own cache, so the rows stream from memory as in a step (30 layers
of 64 sequences at 271 tokens are 800 MB). Blocks are handed out round-robin across the sequences,
as a batch that grows together gets them. Medians of ``--repeats`` interleaved rounds; same threads
for all. The largest difference between the two outputs is printed beside the times.

    .venv/bin/python bench/decode_attention.py --write-results
"""

from __future__ import annotations

import argparse
import datetime

import torch
from bench_common import cpu_model, median_ms_interleaved, write_results

from loomlm.kernels import cpu_ops

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16
CASES = ((1, 271), (8, 271), (64, 40), (64, 100), (64, 271), (128, 100), (8, 1024))


def caches(num_seqs: int, context: int, layers: int):
    blocks_per_seq = -(-context // BLOCK)
    num_blocks = num_seqs * blocks_per_seq
    shape = (num_blocks, BLOCK, KV_HEADS, HEAD_DIM)
    layer_caches = [(torch.randn(shape), torch.randn(shape)) for _ in range(layers)]
    # Block b of sequence s is block b * num_seqs + s: a batch growing together interleaves them.
    tables = (torch.arange(blocks_per_seq)[None, :] * num_seqs + torch.arange(num_seqs)[:, None]).int()
    lens = torch.full((num_seqs,), context, dtype=torch.int32)
    return layer_caches, tables, lens


def measure(num_seqs: int, context: int, layers: int, repeats: int) -> str:
    torch.manual_seed(0)
    layer_caches, tables, lens = caches(num_seqs, context, layers)
    query = torch.randn(num_seqs, HEADS, HEAD_DIM)
    scale = HEAD_DIM**-0.5
    nbytes = 2 * num_seqs * context * KV_HEADS * HEAD_DIM * 4 * layers  # K and V rows read
    flat = torch.randn(nbytes // 4)

    def loomlm():
        return [cpu_ops._C.decode_attention(query, k, v, tables, lens, scale) for k, v in layer_caches]

    bf16_caches = [(k.bfloat16(), v.bfloat16()) for k, v in layer_caches]

    def loomlm_bf16_cache():
        return [cpu_ops._C.decode_attention(query, k, v, tables, lens, scale) for k, v in bf16_caches]

    def torch_path():
        return [cpu_ops.decode_attention_ref(query, k, v, tables, lens, scale) for k, v in layer_caches]

    fns = {"loomlm": loomlm, "torch": torch_path, "read": lambda: flat.sum(), "bf16": loomlm_bf16_cache}
    diff = max((a - b).abs().max().item() for a, b in zip(loomlm(), torch_path(), strict=True))
    ms = median_ms_interleaved(fns, repeats)
    gbs = {name: nbytes / ms[name] / 1e6 for name in ms}
    speedup, of_roof = ms["torch"] / ms["loomlm"], gbs["loomlm"] / gbs["read"]
    return (
        f"| {num_seqs} | {context} | {ms['loomlm']:.2f} | {gbs['loomlm']:.1f} | {ms['torch']:.2f} "
        f"| {speedup:.2f}x | {gbs['read']:.1f} | {of_roof:.0%} | {diff:.1e} | {ms['bf16']:.2f} "
        f"| {ms['loomlm'] / ms['bf16']:.2f}x |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args()
    if cpu_ops._C is None:
        raise SystemExit("loomlm._C is not built")
    header = [
        f"- Machine: {cpu_model()}; torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- {args.layers} layers per call (a cache each), median of {args.repeats} interleaved rounds; "
        "read roof: a sum over a contiguous tensor of the same bytes",
        "",
        "| sequences | context | loomlm ms | loomlm GB/s | torch ms | loomlm vs torch | read roof GB/s "
        "| loomlm / roof | max diff | bf16 cache ms | bf16 cache vs float32 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for num_seqs, context in CASES:
        rows.append(measure(num_seqs, context, args.layers, args.repeats))
        print(rows[-1], flush=True)
    section = "\n".join(header + rows)
    print("\n" + section)
    if args.write_results:
        write_results("decode_attention", section, quick=False)


if __name__ == "__main__":
    main()
