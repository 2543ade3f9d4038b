"""The torch building blocks of ``paged_attention_ref`` (the CPU path): batched decode over
length buckets gathered into a kept workspace, and one fused SDPA per prefill chunk."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Softmax runs in float32: half-precision inputs are upcast for the reference computation.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def decode_batch(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, workspace):
    """Attention for many single-query sequences: query [n, heads, d] -> [n, heads, d]."""
    num_blocks, block_size = key_cache.shape[:2]
    if workspace is None or not (key_cache.is_contiguous() and value_cache.is_contiguous()):
        blocks_per_seq = min(-(-max_seq_len // block_size), block_tables.shape[1])
        # Entries past a sequence's last block are arbitrary; clamp so the gather stays in bounds.
        blocks = block_tables[:, :blocks_per_seq].to(torch.int64).clamp(0, num_blocks - 1).reshape(-1)
        positions = torch.arange(blocks_per_seq * block_size, device=query.device)
        mask = (positions[None, :] < seq_lens[:, None].to(positions.dtype))[:, None, None, :]
        return _decode_sdpa(query, key_cache[blocks], value_cache[blocks], key_cache.shape[2], mask, scale)
    out = None
    row_numel = key_cache[0].numel()
    for bucket in workspace.decode_plan(block_tables, seq_lens, block_size, num_blocks):
        keys, values = workspace.kv_buffers(bucket.blocks.numel(), row_numel, key_cache.dtype, query.device)
        torch.index_select(key_cache.view(num_blocks, row_numel), 0, bucket.blocks, out=keys)
        torch.index_select(value_cache.view(num_blocks, row_numel), 0, bucket.blocks, out=values)
        if bucket.rows is None:
            return _decode_sdpa(query, keys, values, key_cache.shape[2], bucket.mask, scale)
        if out is None:
            out = torch.empty_like(query, dtype=_compute_dtype(query.dtype))
        out[bucket.rows] = _decode_sdpa(
            query[bucket.rows], keys, values, key_cache.shape[2], bucket.mask, scale
        )
    return out


def _decode_sdpa(query, gathered_keys, gathered_values, num_kv_heads, mask, scale):
    """One SDPA over single-query sequences whose K/V blocks were gathered (any leading shape)."""
    num_seqs, num_heads, head_dim = query.shape
    dtype = _compute_dtype(query.dtype)
    shape = (num_seqs, -1, num_kv_heads, head_dim)
    keys = gathered_keys.view(shape).transpose(1, 2).to(dtype)
    values = gathered_values.view(shape).transpose(1, 2).to(dtype)
    # GQA without expanding K/V: fold each kv head's query heads into SDPA's query-length axis.
    grouped_query = query.reshape(num_seqs, num_kv_heads, num_heads // num_kv_heads, head_dim).to(dtype)
    out = F.scaled_dot_product_attention(grouped_query, keys, values, attn_mask=mask, scale=scale)
    return out.reshape(num_seqs, num_heads, head_dim)


def prefill_one(query, key_cache, value_cache, block_row, seq_len, scale):
    """SDPA for one sequence's q_len > 1 queries over its gathered context: [q_len, heads, d]."""
    q_len = query.shape[0]
    block_size, num_kv_heads, head_dim = key_cache.shape[1:]
    blocks = block_row[: -(-seq_len // block_size)].to(torch.int64)
    dtype = _compute_dtype(query.dtype)
    keys = key_cache[blocks].view(-1, num_kv_heads, head_dim)[:seq_len].transpose(0, 1).to(dtype)
    values = value_cache[blocks].view(-1, num_kv_heads, head_dim)[:seq_len].transpose(0, 1).to(dtype)
    queries = query.transpose(0, 1).to(dtype)
    mask = None  # q_len == seq_len: SDPA's top-left causal mask is also bottom-right
    if q_len != seq_len:
        # Bottom-right causal: query i may see keys up to seq_len - q_len + i.
        key_pos = torch.arange(seq_len, device=query.device)
        query_pos = torch.arange(seq_len - q_len, seq_len, device=query.device)
        mask = key_pos[None, :] <= query_pos[:, None]
    if num_kv_heads != queries.shape[0]:
        # SDPA's enable_gqa takes a slow path on CPU; expanded K/V hits the fused kernel (~2x faster).
        group = queries.shape[0] // num_kv_heads
        keys = keys.repeat_interleave(group, dim=0)
        values = values.repeat_interleave(group, dim=0)
    # 4-D inputs: CPU SDPA only takes its fused flash kernel for [batch, heads, len, dim].
    out = F.scaled_dot_product_attention(
        queries[None], keys[None], values[None], attn_mask=mask, is_causal=mask is None, scale=scale
    )
    return out[0].transpose(0, 1)
