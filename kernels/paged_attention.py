"""Paged attention over a block-table KV cache, for decode and (chunked) prefill in one batch.

Owns `paged_attention_ref` (pure torch on SDPA, the CPU path), `paged_attention_triton` (a flash-style
kernel walking the block table) and the `paged_attention` dispatcher. Causal rule: the i-th of the
q_len new queries of a sequence sits at position `seq_len - q_len + i` and sees keys `0..position`.
"""

from __future__ import annotations

import torch

from loomlm.kernels.cpu_ops import (
    decode_attention,
    native_cache,
    native_ops_apply,
    prefill_attention,
    prefill_attention_available,
)
from loomlm.kernels.paged_attention_cpu import decode_batch, prefill_one
from loomlm.kernels.triton_import import require_triton, tl, triton
from loomlm.kernels.workspace import AttentionWorkspace


def paged_attention_ref(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    max_seq_len: int,
    workspace: AttentionWorkspace | None = None,
) -> torch.Tensor:
    """Causal paged attention in pure torch; returns [T, num_heads, head_dim] in query's dtype.
    ``workspace`` keeps the decode gather buffers between calls (much faster on CPU)."""
    return _attend_on_cpu(
        query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale, max_query_len,
        max_seq_len, workspace, decode_batch,
    )  # fmt: skip


def paged_attention_native(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    max_seq_len: int,
    workspace: AttentionWorkspace | None = None,
) -> torch.Tensor:
    """The CPU path where loomlm._C is built (float32): an all-decode step in the C++ decode kernel,
    read straight from the paged cache (no gather, no per-step plan); a step with prefill chunks of
    at most `NATIVE_PREFILL_MAX_ROWS` tokens in one C++ call for every sequence (its decode rows too);
    longer chunks on torch's fused SDPA as in the reference, short ones as decode rows."""
    if max_query_len > 1 and max_query_len <= NATIVE_PREFILL_MAX_ROWS and prefill_attention_available():
        return prefill_attention(
            query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale
        )

    def decode(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, workspace):
        return decode_attention(query, key_cache, value_cache, block_tables, seq_lens, scale)

    return _attend_on_cpu(
        query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale, max_query_len,
        max_seq_len, workspace, decode, NATIVE_ROWS_CHUNK,
    )  # fmt: skip


# The C++ prefill kernel ran chunks of 16-512 tokens 1.4-7x faster than one SDPA call per sequence
# (bench/attention.py: the per-call cost dominated short chunks), and a lone 2048-token chunk 0.8x.
NATIVE_PREFILL_MAX_ROWS = 1024

# Prefill chunks of at most this many tokens run as rows of the C++ decode kernel: a prompt whose
# prefix was cached recomputes its last block, and one SDPA call per such sequence and layer (with its
# K/V gather and GQA expansion) cost more than the attention itself (bench/quant.py's batched rounds).
NATIVE_ROWS_CHUNK = 16


def _attend_on_cpu(
    query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale, max_query_len,
    max_seq_len, workspace, decode_batch, rows_chunk=1,
) -> torch.Tensor:  # fmt: skip
    num_seqs = seq_lens.shape[0]
    if max_query_len == 1 and query.shape[0] == num_seqs > 0:
        # All decodes: row b is sequence b; no per-sequence Python work and no host sync.
        out = decode_batch(
            query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, workspace
        )
        return out.to(query.dtype)
    out = torch.zeros_like(query)
    if query.shape[0] == 0 or num_seqs == 0:
        return out

    starts = query_start_loc.tolist()
    lens = seq_lens.tolist()
    # Every token of a chunk of at most rows_chunk tokens is one decode row: the i-th of q_len new
    # tokens sees keys 0..seq_len - q_len + i, so its row's length is seq_len - q_len + i + 1.
    row_seqs = [b for b in range(num_seqs) if 1 <= starts[b + 1] - starts[b] <= rows_chunk]
    if row_seqs:
        # (row, sequence, the row's causal length) per token
        plan = [
            (r, b, lens[b] - starts[b + 1] + 1 + r) for b in row_seqs for r in range(starts[b], starts[b + 1])
        ]
        rows, seq_of_row, row_lens = torch.tensor(plan, device=query.device).unbind(1)
        row_lens = row_lens.to(seq_lens.dtype)
        max_len = max(lens[b] for b in row_seqs)
        decode_out = decode_batch(
            query[rows], key_cache, value_cache, block_tables[seq_of_row], row_lens, scale, max_len, workspace
        )
        out[rows] = decode_out.to(query.dtype)
    for b in range(num_seqs):
        start, end = starts[b], starts[b + 1]
        if end - start > rows_chunk:
            out[start:end] = prefill_one(
                query[start:end], key_cache, value_cache, block_tables[b], lens[b], scale
            ).to(query.dtype)
    return out


if triton is not None:

    @triton.jit
    def _paged_attention_kernel(
        query_ptr,
        key_cache_ptr,
        value_cache_ptr,
        block_tables_ptr,
        seq_lens_ptr,
        query_start_loc_ptr,
        out_ptr,
        scale_log2e,
        queries_per_kv,
        block_size,
        head_dim,
        stride_token,
        stride_head,
        stride_cache_block,
        stride_cache_offset,
        stride_cache_head,
        stride_bt_seq,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        # Program = (sequence, kv head, tile of rows). A row is one (query token, query head of this
        # kv head's group) pair, so each K/V tile is loaded once for the whole GQA group. query and out
        # share strides, and so do the two caches.
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
        tile = tl.program_id(2)
        q_start = tl.load(query_start_loc_ptr + seq)
        q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
        seq_len = tl.load(seq_lens_ptr + seq)
        num_rows = q_len * queries_per_kv

        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_valid = rows < num_rows
        q_index = rows // queries_per_kv
        head = kv_head * queries_per_kv + rows % queries_per_kv
        q_pos = seq_len - q_len + q_index
        dims = tl.arange(0, BLOCK_D)
        dim_valid = dims < head_dim
        row_offsets = (q_start + q_index).to(tl.int64)[:, None] * stride_token + head[:, None] * stride_head
        io_mask = row_valid[:, None] & dim_valid[None, :]
        q = tl.load(query_ptr + row_offsets + dims[None, :], mask=io_mask, other=0.0)

        # Keys past the last valid row's position are never needed; empty tiles skip the loop entirely.
        last_row = tl.minimum(tile * BLOCK_M + BLOCK_M, num_rows) - 1
        kv_end = tl.where(tile * BLOCK_M < num_rows, seq_len - q_len + last_row // queries_per_kv + 1, 0)

        # Finite initial max so fully masked (padding) rows never compute (-inf) - (-inf).
        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for kv_start in range(0, kv_end, BLOCK_N):
            kv_pos = kv_start + tl.arange(0, BLOCK_N)
            kv_valid = kv_pos < kv_end
            # A KV tile may span several cache blocks: look each position's block up in the table.
            block_ids = tl.load(
                block_tables_ptr + seq * stride_bt_seq + kv_pos // block_size, mask=kv_valid, other=0
            ).to(tl.int64)
            in_block = kv_pos % block_size
            kv_mask = kv_valid[:, None] & dim_valid[None, :]
            kv_offsets = (
                block_ids[:, None] * stride_cache_block
                + in_block[:, None] * stride_cache_offset
                + kv_head * stride_cache_head
                + dims[None, :]
            )
            k = tl.load(key_cache_ptr + kv_offsets, mask=kv_mask, other=0.0)
            v = tl.load(value_cache_ptr + kv_offsets, mask=kv_mask, other=0.0)
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale_log2e
            visible = (kv_pos[None, :] <= q_pos[:, None]) & kv_valid[None, :]
            scores = tl.where(visible, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(scores - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            m_i = m_new

        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + row_offsets + dims[None, :], out.to(out_ptr.dtype.element_ty), mask=io_mask)


def paged_attention_triton(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    max_seq_len: int,
    workspace: AttentionWorkspace | None = None,
) -> torch.Tensor:
    """Triton version of `paged_attention_ref` (same contract; ``workspace`` is not needed here).

    The caches must share strides and have unit stride on head_dim; query is made contiguous if needed.
    """
    require_triton()
    num_tokens, num_heads, head_dim = query.shape
    num_kv_heads = key_cache.shape[2]
    num_seqs = seq_lens.shape[0]
    query = query.contiguous()
    out = torch.empty_like(query)
    if num_tokens == 0 or num_seqs == 0 or max_query_len == 0:
        return out
    if key_cache.stride(3) != 1 or key_cache.stride() != value_cache.stride():
        raise ValueError("key_cache and value_cache must share strides, with unit stride on head_dim")
    block_tables = block_tables if block_tables.stride(1) == 1 else block_tables.contiguous()
    queries_per_kv = num_heads // num_kv_heads
    rows_per_seq = max_query_len * queries_per_kv
    block_m = 16 if rows_per_seq <= 16 else 64  # tl.dot needs >= 16; decode rows are just one GQA group
    grid = (num_seqs, num_kv_heads, triton.cdiv(rows_per_seq, block_m))
    _paged_attention_kernel[grid](
        query,
        key_cache,
        value_cache,
        block_tables,
        seq_lens.contiguous(),
        query_start_loc.contiguous(),
        out,
        scale * 1.4426950408889634,  # exp(x) == exp2(x * log2(e))
        queries_per_kv,
        key_cache.shape[1],
        head_dim,
        query.stride(0),
        query.stride(1),
        key_cache.stride(0),
        key_cache.stride(1),
        key_cache.stride(2),
        block_tables.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=64,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
    )
    return out


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    max_query_len: int,
    max_seq_len: int,
    workspace: AttentionWorkspace | None = None,
) -> torch.Tensor:
    """Paged attention: the Triton kernel on CUDA (when triton imports), the C++ decode where
    `native_ops_apply` (CPU float32, extension built) and `native_cache` (a float32 or bfloat16
    cache), else the torch reference."""
    if query.is_cuda and triton is not None:
        impl = paged_attention_triton
    elif native_ops_apply(query) and native_cache(key_cache):
        impl = paged_attention_native
    else:
        impl = paged_attention_ref
    return impl(
        query,
        key_cache,
        value_cache,
        block_tables,
        seq_lens,
        query_start_loc,
        scale,
        max_query_len,
        max_seq_len,
        workspace,
    )
