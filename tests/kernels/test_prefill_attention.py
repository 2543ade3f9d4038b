"""The C++ prefill attention equals its torch reference (one SDPA per chunk) for fresh prompts,
chunks after a cached context, decode rows in the same call, chunks longer than one row block,
every GQA grouping and head sizes that are multiples of 8, on float32 and bfloat16 caches; rows
outside every chunk stay zero; bad block tables and query offsets raise before any read."""

import pytest
import torch

from loomlm.kernels import cpu_ops
from loomlm.kernels.native import _C

pytestmark = pytest.mark.skipif(
    not cpu_ops.prefill_attention_available(), reason="loomlm._C not built, or this CPU has no AVX2/FMA"
)
BLOCK = 8


def batch(chunks, heads=9, kv_heads=3, head_dim=64, seed=0, spare_rows=0):
    """chunks: (q_len, seq_len) per sequence; blocks laid out in a shuffled order."""
    torch.manual_seed(seed)
    blocks_per = [-(-seq_len // BLOCK) for _, seq_len in chunks]
    num_blocks = sum(blocks_per) + 2
    order = torch.randperm(num_blocks).tolist()
    tables = torch.zeros(len(chunks), max(blocks_per), dtype=torch.int32)
    used = 0
    for s, n in enumerate(blocks_per):
        tables[s, :n] = torch.tensor(order[used : used + n], dtype=torch.int32)
        used += n
    key_cache = torch.randn(num_blocks, BLOCK, kv_heads, head_dim)
    value_cache = torch.randn(num_blocks, BLOCK, kv_heads, head_dim)
    q_lens = torch.tensor([q for q, _ in chunks])
    starts = torch.cat((torch.zeros(1, dtype=torch.int64), q_lens.cumsum(0))).to(torch.int32)
    query = torch.randn(int(starts[-1]) + spare_rows, heads, head_dim)
    lens = torch.tensor([s for _, s in chunks], dtype=torch.int32)
    return query, key_cache, value_cache, tables, lens, starts


def run_both(args, scale=0.125):
    got = _C.prefill_attention(*args, scale)
    return got, cpu_ops.prefill_attention_ref(*args, scale)


@pytest.mark.parametrize(
    "chunks",
    [
        [(5, 5)],  # a fresh prompt
        [(40, 40), (17, 17), (1, 1)],  # several prompts, one a single token
        [(12, 30), (1, 57), (33, 33), (1, 9)],  # chunks after a context, decode rows between them
        [(70, 150)],  # a long chunk: several row blocks, most keys from the context
    ],
)
def test_prefill_attention_equals_the_reference(chunks):
    got, expected = run_both(batch(chunks))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunks", [[(12, 30), (1, 57), (33, 33), (1, 9)], [(70, 150), (1, 20), (1, 33)]])
def test_a_bfloat16_cache_is_read_exactly_widened(chunks):
    query, key_cache, value_cache, tables, lens, starts = batch(chunks, seed=3)
    key_cache, value_cache = key_cache.bfloat16(), value_cache.bfloat16()
    got = _C.prefill_attention(query, key_cache, value_cache, tables, lens, starts, 0.125)
    widened = (key_cache.float(), value_cache.float())
    expected = cpu_ops.prefill_attention_ref(query, *widened, tables, lens, starts, 0.125)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 4, 128), (6, 2, 24), (8, 1, 8)])
def test_every_grouping_and_head_size(heads, kv_heads, head_dim):
    args = batch([(19, 25), (1, 4), (9, 9)], heads, kv_heads, head_dim, seed=heads)
    got, expected = run_both(args)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_rows_outside_every_chunk_are_zero_and_threads_agree():
    args = batch([(10, 10), (3, 20)], spare_rows=4)
    got, expected = run_both(args)
    assert torch.equal(got[13:], torch.zeros_like(got[13:]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _C.prefill_attention(*args, 0.125)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(single, got)  # each row is computed by one item, in one order


def test_bad_tables_and_offsets_raise_before_reading():
    query, key_cache, value_cache, tables, lens, starts = batch([(6, 10)])
    bad_tables = tables.clone()
    bad_tables[0, 1] = key_cache.shape[0]
    with pytest.raises(RuntimeError, match="outside the cache"):
        _C.prefill_attention(query, key_cache, value_cache, bad_tables, lens, starts, 0.1)
    with pytest.raises(RuntimeError, match="does not fit"):
        _C.prefill_attention(query, key_cache, value_cache, tables[:, :1], lens, starts, 0.1)
    with pytest.raises(RuntimeError, match="has 6 query rows for 5 positions"):
        _C.prefill_attention(
            query, key_cache, value_cache, tables, torch.tensor([5], dtype=torch.int32), starts, 0.1
        )
    with pytest.raises(RuntimeError, match="within the 6 query rows"):
        _C.prefill_attention(
            query, key_cache, value_cache, tables, lens, torch.tensor([0, 7], dtype=torch.int32), 0.1
        )
    with pytest.raises(RuntimeError, match="query_start_loc must be"):
        _C.prefill_attention(query, key_cache, value_cache, tables, lens, starts.long(), 0.1)
