"""Paged attention: the torch path (`paged_attention_ref`, built on `paged_attention_cpu`) against dense
causal attention over the unpaged K/V, and the Triton kernel (TRITON_INTERPRET=1 on CPU) against it.

Each case draws every sequence's K/V first, then scatters it into a cache whose other slots hold
garbage, through a shuffled (non-contiguous) block table: the oracle never sees the paging."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest
import torch

from loomlm.kernels import AttentionWorkspace, paged_attention, paged_attention_ref, paged_attention_triton
from loomlm.kernels.native import _C
from loomlm.kernels.paged_attention import NATIVE_PREFILL_MAX_ROWS, paged_attention_native

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
    # chunks past the decode-row limit (16 tokens) beside short ones
    "long_chunks": [(24, 24), (1, 9), (20, 41), (16, 30), (17, 17)],
}
HEAD_CONFIGS = [(4, 2), (9, 3), (4, 4)]  # (num_heads, num_kv_heads): GQA groups of 2 and 3, and MHA


@dataclass
class Case:
    args: tuple  # paged_attention's positional arguments, on DEVICE
    keys: list[torch.Tensor]  # per sequence, unpaged: [seq_len, num_kv_heads, head_dim]
    values: list[torch.Tensor]
    q_lens: list[int]


def make_case(
    batch, block_size, num_heads, num_kv_heads, head_dim, dtype=torch.float32, seed=0, strided_table=False
) -> Case:
    """Per-sequence K/V scattered into garbage-filled caches through shuffled block tables.

    Table entries past a sequence's blocks are arbitrary valid ids. ``strided_table`` hands the
    kernels a block table view whose rows are not contiguous in memory."""
    gen = torch.Generator().manual_seed(seed)
    q_lens = [q_len for q_len, _ in batch]
    seq_lens = [seq_len for _, seq_len in batch]
    keys = [torch.randn(n, num_kv_heads, head_dim, generator=gen).to(dtype) for n in seq_lens]
    values = [torch.randn(n, num_kv_heads, head_dim, generator=gen).to(dtype) for n in seq_lens]

    blocks_needed = [math.ceil(n / block_size) for n in seq_lens]
    num_blocks = sum(blocks_needed) + 5
    max_blocks = max(blocks_needed) + 1
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    key_cache = torch.randn(shape, generator=gen).to(dtype)
    value_cache = torch.randn(shape, generator=gen).to(dtype)
    free_ids = torch.randperm(num_blocks, generator=gen).tolist()
    table = torch.randint(0, num_blocks, (len(batch), max_blocks), generator=gen, dtype=torch.int32)
    for b, seq_len in enumerate(seq_lens):
        for j in range(blocks_needed[b]):
            block_id = free_ids.pop()
            table[b, j] = block_id
            span = slice(j * block_size, min(seq_len, (j + 1) * block_size))
            key_cache[block_id, : span.stop - span.start] = keys[b][span]
            value_cache[block_id, : span.stop - span.start] = values[b][span]
    if strided_table:
        wide = torch.randint(0, num_blocks, (len(batch), max_blocks, 3), generator=gen, dtype=torch.int32)
        wide[..., 1] = table
        table = wide[..., 1]
        assert not table.is_contiguous()

    query = torch.randn(sum(q_lens), num_heads, head_dim, generator=gen).to(dtype)
    query_start_loc = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    tensors = [t.to(DEVICE) for t in (query, key_cache, value_cache, table)]
    tensors += [torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE), query_start_loc.to(DEVICE)]
    args = (*tensors, 1.0 / math.sqrt(head_dim), max(q_lens), max(seq_lens))
    return Case(args, keys, values, q_lens)


def dense_attention(case: Case) -> torch.Tensor:
    """Causal attention per sequence in float64 over its unpaged K/V (explicit softmax, no SDPA).

    The i-th of a sequence's q_len queries sits at position seq_len - q_len + i; query head h reads
    kv head h // (num_heads // num_kv_heads)."""
    query, scale = case.args[0].cpu().double(), case.args[6]
    outs, start = [], 0
    for keys, values, q_len in zip(case.keys, case.values, case.q_lens, strict=True):
        q = query[start : start + q_len].transpose(0, 1)  # [heads, q_len, d]
        start += q_len
        seq_len, num_kv_heads = keys.shape[:2]
        group = q.shape[0] // num_kv_heads
        k = keys.double().repeat_interleave(group, dim=1).transpose(0, 1)  # [heads, seq_len, d]
        v = values.double().repeat_interleave(group, dim=1).transpose(0, 1)
        query_pos = torch.arange(seq_len - q_len, seq_len)
        visible = torch.arange(seq_len)[None, :] <= query_pos[:, None]
        scores = (q @ k.transpose(1, 2) * scale).masked_fill(~visible, float("-inf"))
        outs.append((scores.softmax(-1) @ v).transpose(0, 1))
    return torch.cat(outs)


def assert_matches_dense(out: torch.Tensor, case: Case, tol: float = 1e-5) -> None:
    query = case.args[0]
    assert out.shape == query.shape and out.dtype == query.dtype
    torch.testing.assert_close(out.cpu().double(), dense_attention(case), atol=tol, rtol=tol)


# --- the torch (CPU) path against the dense oracle ------------------------------------------------


@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("num_heads,num_kv_heads", HEAD_CONFIGS)
@pytest.mark.parametrize("head_dim", [16, 64])
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_torch_path_matches_dense_attention(batch_name, num_heads, num_kv_heads, head_dim, block_size):
    case = make_case(BATCHES[batch_name], block_size, num_heads, num_kv_heads, head_dim)
    assert_matches_dense(paged_attention_ref(*case.args), case)
    # The engine's CPU path keeps a workspace (kept gather buffers, cached plan): same numbers.
    workspace = AttentionWorkspace()
    for _ in range(2):
        assert_matches_dense(paged_attention_ref(*case.args, workspace=workspace), case)


@pytest.mark.parametrize("max_query_len", [1, 2])  # 1: the all-decode fast path; 2: the mixed path
def test_decode_batch_matches_dense_on_both_paths(max_query_len):
    case = make_case(BATCHES["decode"], 4, 9, 3, 16)
    args = (*case.args[:7], max_query_len, case.args[8])
    assert_matches_dense(paged_attention_ref(*args), case)


@pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("num_heads,num_kv_heads", HEAD_CONFIGS)
@pytest.mark.parametrize("strided_table", [False, True])
def test_native_cpu_path_matches_dense_attention(batch_name, num_heads, num_kv_heads, strided_table):
    # Decode rows and chunks of up to 1024 tokens in C++ straight from the cache; longer steps on SDPA.
    case = make_case(BATCHES[batch_name], 4, num_heads, num_kv_heads, 64, strided_table=strided_table)
    assert_matches_dense(paged_attention_native(*case.args), case)
    past = out_of_range_past_context(case, 4)  # entries past a sequence's blocks are never read
    assert_matches_dense(paged_attention_native(*past.args), past)


@pytest.mark.skipif(_C is None, reason="loomlm._C is not built")
def test_native_cpu_path_past_the_prefill_kernels_limit():
    # A chunk longer than NATIVE_PREFILL_MAX_ROWS: the step takes SDPA per sequence and decode rows.
    assert NATIVE_PREFILL_MAX_ROWS < 1030
    case = make_case([(1030, 1030), (1, 9), (20, 41), (3, 3)], 16, 9, 3, 64, seed=7)
    assert_matches_dense(paged_attention_native(*case.args), case)


def test_strided_block_table():
    case = make_case(BATCHES["mixed"], 4, 4, 2, 16, seed=5, strided_table=True)
    assert_matches_dense(paged_attention_ref(*case.args), case)
    assert_matches_dense(paged_attention_ref(*case.args, workspace=AttentionWorkspace()), case)


def test_dispatch_matches_dense_attention():
    case = make_case(BATCHES["mixed"], 4, 4, 2, 16, seed=6)
    assert_matches_dense(paged_attention(*case.args), case)


def test_half_precision_keeps_the_query_dtype():
    case = make_case(BATCHES["mixed"], 16, 9, 3, 64, dtype=torch.bfloat16)
    assert_matches_dense(paged_attention_ref(*case.args), case, tol=2e-2)


def test_empty_batch():
    args = make_case([(1, 3)], 4, 4, 2, 16).args
    out = paged_attention_ref(args[0][:0], *args[1:3], args[3][:0], args[4][:0], args[5][:1], args[6], 0, 0)
    assert out.shape == (0, 4, 16)


def out_of_range_past_context(case: Case, block_size: int) -> Case:
    """The case with every table entry past a sequence's blocks set to an invalid block id."""
    table = case.args[3].clone()
    for b, seq_len in enumerate(case.args[4].tolist()):
        table[b, math.ceil(seq_len / block_size) :] = 10**6
    return Case((*case.args[:3], table, *case.args[4:]), case.keys, case.values, case.q_lens)


def test_out_of_range_table_entries_past_the_context_are_ignored():
    case = out_of_range_past_context(make_case(BATCHES["mixed"], 4, 4, 2, 16, seed=4), 4)
    assert_matches_dense(paged_attention_ref(*case.args), case)
    assert_matches_dense(paged_attention_ref(*case.args, workspace=AttentionWorkspace()), case)


@pytest.mark.parametrize("with_prefill", [False, True])
def test_workspace_path_with_length_buckets_matches_dense(with_prefill):
    """Large decode batches are split into length buckets gathered into kept buffers; the result
    must not change, for an all-decode batch and for decodes mixed with a prefill chunk."""
    gen = torch.Generator().manual_seed(3)
    batch = [(1, int(n)) for n in torch.randint(1, 90, (37,), generator=gen)]
    if with_prefill:
        batch.insert(5, (6, 40))
    case = make_case(batch, 8, 9, 3, 16, seed=4)
    workspace = AttentionWorkspace()
    for _ in range(2):  # the second call reuses the cached plan and buffers
        assert_matches_dense(paged_attention_ref(*case.args, workspace=workspace), case)


# --- the Triton kernel against the torch reference ------------------------------------------------

TRITON_CASES = [
    # (batch, block_size, num_heads, num_kv_heads, head_dim)
    ("decode", 4, 9, 3, 64),
    ("decode", 16, 4, 4, 16),
    ("prefill", 16, 4, 2, 16),
    ("prefill_with_prefix", 4, 9, 3, 16),
    ("mixed", 1, 4, 2, 16),
    ("mixed", 4, 4, 2, 64),
    ("mixed", 16, 9, 3, 16),
]


@needs_triton
@pytest.mark.parametrize("batch_name,block_size,num_heads,num_kv_heads,head_dim", TRITON_CASES)
def test_triton_matches_reference(batch_name, block_size, num_heads, num_kv_heads, head_dim):
    case = make_case(BATCHES[batch_name], block_size, num_heads, num_kv_heads, head_dim, seed=1)
    out = paged_attention_triton(*case.args)
    assert out.shape == case.args[0].shape and out.dtype == case.args[0].dtype
    torch.testing.assert_close(out, paged_attention_ref(*case.args), atol=1e-5, rtol=1e-5)


@needs_triton
def test_triton_long_prefill_spans_many_tiles():
    # 40 queries x 3 heads per kv head = 120 rows: several row tiles and several KV tiles.
    case = make_case([(40, 70), (1, 66)], 16, 6, 2, 16, seed=2)
    torch.testing.assert_close(
        paged_attention_triton(*case.args), paged_attention_ref(*case.args), atol=1e-5, rtol=1e-5
    )


@needs_triton
def test_triton_half_precision():
    case = make_case(BATCHES["mixed"], 16, 4, 2, 16, dtype=torch.float16, seed=3)
    out = paged_attention_triton(*case.args)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), paged_attention_ref(*case.args).float(), atol=2e-3, rtol=2e-3)


@needs_triton
def test_triton_strided_block_table():
    case = make_case(BATCHES["mixed"], 4, 9, 3, 16, seed=5, strided_table=True)
    torch.testing.assert_close(
        paged_attention_triton(*case.args), paged_attention_ref(*case.args), atol=1e-5, rtol=1e-5
    )


@needs_triton
def test_triton_ignores_out_of_range_table_entries_past_the_context():
    case = out_of_range_past_context(make_case(BATCHES["mixed"], 4, 4, 2, 16, seed=4), 4)
    assert_matches_dense(paged_attention_triton(*case.args), case)
