"""Paged attention: the torch reference against a naive dense oracle, and Triton against the reference."""

from __future__ import annotations

import math
import os

import pytest
import torch

from loomlm.kernels import AttentionWorkspace, paged_attention, paged_attention_ref, paged_attention_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 set before triton is imported",
)

# Each batch is a list of (q_len, seq_len): seq_len counts the new tokens too.
BATCHES = {
    "decode": [(1, 5), (1, 17), (1, 1), (1, 33)],
    "prefill": [(7, 7), (16, 16), (3, 3)],
    "prefill_with_prefix": [(5, 12), (9, 20), (2, 3)],
    "mixed": [(1, 9), (6, 6), (1, 30), (0, 10), (4, 21), (1, 2)],
}
HEAD_CONFIGS = [(4, 2), (9, 3), (4, 4)]  # (num_heads, num_kv_heads)


def make_case(batch, block_size, num_heads, num_kv_heads, head_dim, dtype=torch.float32, seed=0):
    """Random caches (unused blocks hold garbage too) and shuffled block tables for `batch`."""
    gen = torch.Generator().manual_seed(seed)
    blocks_needed = [math.ceil(seq_len / block_size) for _, seq_len in batch]
    num_blocks = sum(blocks_needed) + 5
    max_blocks = max(blocks_needed) + 1
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    key_cache = torch.randn(shape, generator=gen)
    value_cache = torch.randn(shape, generator=gen)
    block_ids = torch.randperm(num_blocks, generator=gen).tolist()
    # Entries past a sequence's blocks are arbitrary: fill them with random (valid) block ids.
    block_tables = torch.randint(0, num_blocks, (len(batch), max_blocks), generator=gen, dtype=torch.int32)
    for b, count in enumerate(blocks_needed):
        block_tables[b, :count] = torch.tensor([block_ids.pop() for _ in range(count)], dtype=torch.int32)
    q_lens = [q_len for q_len, _ in batch]
    query = torch.randn(sum(q_lens), num_heads, head_dim, generator=gen)
    seq_lens = torch.tensor([seq_len for _, seq_len in batch], dtype=torch.int32)
    query_start_loc = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    args = [t.to(DEVICE) for t in (query, key_cache, value_cache)]
    args = [t.to(dtype) for t in args] + [t.to(DEVICE) for t in (block_tables, seq_lens, query_start_loc)]
    return (*args, 1.0 / math.sqrt(head_dim), max(q_lens), int(seq_lens.max()))


def naive_attention(query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale, *_):
    """Dense per-sequence, per-query attention in float64, building K/V from the block table by hand."""
    query, key_cache, value_cache = (t.cpu().double() for t in (query, key_cache, value_cache))
    block_tables, seq_lens, query_start_loc = (
        t.cpu().tolist() for t in (block_tables, seq_lens, query_start_loc)
    )
    block_size = key_cache.shape[1]
    group = query.shape[1] // key_cache.shape[2]
    out = torch.zeros_like(query)
    for b, seq_len in enumerate(seq_lens):
        start, end = query_start_loc[b], query_start_loc[b + 1]
        keys = torch.stack(
            [key_cache[block_tables[b][p // block_size], p % block_size] for p in range(seq_len)]
        )
        values = torch.stack(
            [value_cache[block_tables[b][p // block_size], p % block_size] for p in range(seq_len)]
        )
        for i in range(end - start):
            position = seq_len - (end - start) + i
            for head in range(query.shape[1]):
                k = keys[: position + 1, head // group]
                v = values[: position + 1, head // group]
                weights = torch.softmax(k @ query[start + i, head] * scale, dim=0)
                out[start + i, head] = weights @ v
    return out


@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("num_heads,num_kv_heads", HEAD_CONFIGS)
@pytest.mark.parametrize("head_dim", [16, 64])
@pytest.mark.parametrize("block_size", [4, 16])
def test_reference_matches_naive(batch_name, num_heads, num_kv_heads, head_dim, block_size):
    case = make_case(BATCHES[batch_name], block_size, num_heads, num_kv_heads, head_dim)
    out = paged_attention_ref(*case)
    assert out.shape == case[0].shape and out.dtype == case[0].dtype
    torch.testing.assert_close(out.cpu().double(), naive_attention(*case), atol=1e-5, rtol=1e-5)


def test_reference_half_precision_output_dtype():
    case = make_case(BATCHES["mixed"], 16, 9, 3, 64, dtype=torch.bfloat16)
    out = paged_attention_ref(*case)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.cpu().double(), naive_attention(*case), atol=2e-2, rtol=2e-2)


def test_reference_decode_fast_path_matches_general_path():
    # The all-decode fast path and the mixed path's decode batch must agree.
    case = make_case(BATCHES["decode"], 4, 9, 3, 16)
    fast = paged_attention_ref(*case)
    general = paged_attention_ref(*case[:-2], 2, case[-1])  # a max_query_len > 1 forces the general path
    torch.testing.assert_close(fast, general, atol=1e-6, rtol=1e-6)


def test_dispatch_matches_reference_on_cpu():
    case = [t.cpu() if isinstance(t, torch.Tensor) else t for t in make_case(BATCHES["mixed"], 4, 4, 2, 16)]
    torch.testing.assert_close(paged_attention(*case), paged_attention_ref(*case))


def test_empty_batch():
    case = make_case([(1, 3)], 4, 4, 2, 16)
    empty_query = case[0][:0]
    out = paged_attention_ref(empty_query, *case[1:3], case[3][:0], case[4][:0], case[5][:1], case[6], 0, 0)
    assert out.shape == (0, 4, 16)


TRITON_CASES = [
    # (batch, block_size, num_heads, num_kv_heads, head_dim)
    ("decode", 4, 9, 3, 64),
    ("decode", 16, 4, 4, 16),
    ("prefill", 16, 4, 2, 16),
    ("prefill_with_prefix", 4, 9, 3, 16),
    ("mixed", 4, 4, 2, 64),
    ("mixed", 16, 9, 3, 16),
]


@needs_triton
@pytest.mark.parametrize("batch_name,block_size,num_heads,num_kv_heads,head_dim", TRITON_CASES)
def test_triton_matches_reference(batch_name, block_size, num_heads, num_kv_heads, head_dim):
    case = make_case(BATCHES[batch_name], block_size, num_heads, num_kv_heads, head_dim, seed=1)
    torch.testing.assert_close(
        paged_attention_triton(*case), paged_attention_ref(*case), atol=1e-5, rtol=1e-5
    )


@needs_triton
def test_triton_long_prefill_spans_many_tiles():
    # 40 queries x 3 heads per kv head = 120 rows: several row tiles and several KV tiles.
    case = make_case([(40, 70), (1, 66)], 16, 6, 2, 16, seed=2)
    torch.testing.assert_close(
        paged_attention_triton(*case), paged_attention_ref(*case), atol=1e-5, rtol=1e-5
    )


@needs_triton
def test_triton_half_precision():
    case = make_case(BATCHES["mixed"], 16, 4, 2, 16, dtype=torch.float16, seed=3)
    out = paged_attention_triton(*case)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), paged_attention_ref(*case).float(), atol=2e-3, rtol=2e-3)


@needs_triton
def test_out_of_range_table_entries_past_the_context_are_ignored():
    case = list(make_case(BATCHES["mixed"], 4, 4, 2, 16, seed=4))
    block_tables, seq_lens = case[3].clone(), case[4].tolist()
    for b, seq_len in enumerate(seq_lens):
        block_tables[b, math.ceil(seq_len / 4) :] = 10**6
    case[3] = block_tables
    want = naive_attention(*case)
    torch.testing.assert_close(paged_attention_ref(*case).cpu().double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paged_attention_triton(*case).cpu().double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("with_prefill", [False, True])
def test_workspace_path_with_length_buckets_matches_naive(with_prefill):
    """Large decode batches are split into length buckets gathered into kept buffers; the result
    must not change, for an all-decode batch and for decodes mixed with a prefill chunk."""
    gen = torch.Generator().manual_seed(3)
    batch = [(1, int(n)) for n in torch.randint(1, 90, (37,), generator=gen)]
    if with_prefill:
        batch.insert(5, (6, 40))
    case = make_case(batch, 8, 9, 3, 16, seed=4)
    workspace = AttentionWorkspace()
    expected = naive_attention(*case).float()
    for _ in range(2):  # the second call reuses the cached plan and buffers
        out = paged_attention_ref(*case, workspace=workspace)
        torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
