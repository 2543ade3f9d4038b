"""The C++ per-layer ops (RMSNorm with the residual add, rotary + KV store, SiLU-and-multiply,
decode attention over the paged cache) equal their torch references, and refuse indices that
would read or write outside the cache instead of touching memory there."""

import pytest
import torch

from loomlm.kernels import cpu_ops
from loomlm.kernels.native import _C

pytestmark = pytest.mark.skipif(_C is None, reason="loomlm._C is not built (torch absent at install)")
HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64


@pytest.mark.parametrize("rows", [1, 7, 130])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_with_and_without_the_residual_add(rows, with_residual):
    torch.manual_seed(rows)
    x, weight = torch.randn(rows, 576) * 3, torch.randn(576)
    residual = torch.randn(rows, 576) if with_residual else None
    ours_res = None if residual is None else residual.clone()
    ref_res = None if residual is None else residual.clone()
    got = cpu_ops._C.rms_norm(x, ours_res, weight, 1e-5)
    torch.testing.assert_close(got, cpu_ops.rms_norm_ref(x, ref_res, weight, 1e-5), rtol=1e-5, atol=1e-5)
    if with_residual:
        assert torch.equal(ours_res, ref_res)  # the stream is updated in place, exactly


def caches(num_blocks=32, block_size=8, head_dim=HEAD_DIM):
    torch.manual_seed(1)
    shape = (num_blocks, block_size, KV_HEADS, head_dim)
    return torch.randn(shape), torch.randn(shape)


def test_rotary_and_kv_store_equal_the_reference_and_skip_padding_slots():
    torch.manual_seed(0)
    tokens = 6
    qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD_DIM)
    angles = torch.randn(tokens, HEAD_DIM // 2)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    slots = torch.tensor([3, -1, 100, 0, 255, 17])
    ours, ref = (qkv.clone(), *caches()), (qkv.clone(), *caches())
    cpu_ops._C.rotary_store_kv(ours[0], cos, sin, HEADS + KV_HEADS, HEADS, KV_HEADS, slots, ours[1], ours[2])
    cpu_ops.rotary_store_kv_ref(ref[0], cos, sin, HEADS, KV_HEADS, slots, ref[1], ref[2])
    for got, want in zip(ours, ref, strict=True):
        assert torch.equal(got, want)  # the same products and sums, in the same order


def test_silu_mul_equals_the_reference():
    gate_up = torch.randn(5, 2 * 1536) * 6
    torch.testing.assert_close(
        cpu_ops._C.silu_mul(gate_up), cpu_ops.silu_mul_ref(gate_up), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("group", [1, 3])
# 64 and 136 take the AVX2 code where the CPU has it (a whole and a ragged set of 8-float chunks);
# 12 is not a multiple of 8 and takes the portable loop.
@pytest.mark.parametrize("head_dim", [64, 136, 12])
def test_decode_attention_over_the_paged_cache_equals_the_reference(group, head_dim):
    key_cache, value_cache = caches(head_dim=head_dim)
    torch.manual_seed(2)
    lens = torch.tensor([1, 5, 8, 9, 64, 120], dtype=torch.int32)
    tables = torch.stack([torch.randperm(32)[:16] for _ in lens]).to(torch.int32)
    # Query rows with a stride larger than their heads, as the packed qkv gives them.
    packed = torch.randn(len(lens), KV_HEADS * group + 4, head_dim)
    query = packed[:, : KV_HEADS * group]
    got = cpu_ops._C.decode_attention(query, key_cache, value_cache, tables, lens, 0.125)
    want = cpu_ops.decode_attention_ref(query, key_cache, value_cache, tables, lens, 0.125)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [1, 2, 3, 4, 7])  # query heads per kv head: tiles of 3 and their tails
# 1 thread: every sequence one item (all kv heads, whole rows); 8: fewer sequences than twice the
# threads, so one kv head per item.
@pytest.mark.parametrize("threads", [1, 8])
def test_decode_attention_long_contexts_and_head_groupings(group, threads):
    """Contexts past the kernel's 128-row stretches and 16-row value runs, ragged in both."""
    key_cache, value_cache = caches(num_blocks=160, block_size=16)
    torch.manual_seed(group)
    lens = torch.tensor([3, 129, 300, 1000, 17], dtype=torch.int32)
    tables = torch.stack([torch.randperm(160)[:64] for _ in lens]).to(torch.int32)
    query = torch.randn(len(lens), KV_HEADS * group, HEAD_DIM)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = cpu_ops._C.decode_attention(query, key_cache, value_cache, tables, lens, 0.125)
    finally:
        torch.set_num_threads(before)
    want = cpu_ops.decode_attention_ref(query, key_cache, value_cache, tables, lens, 0.125)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_indices_outside_the_cache_are_refused():
    key_cache, value_cache = caches()
    query = torch.randn(1, HEADS, HEAD_DIM)
    lens = torch.tensor([9], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="outside the cache"):
        cpu_ops._C.decode_attention(
            query, key_cache, value_cache, torch.tensor([[0, 32]], dtype=torch.int32), lens, 0.1
        )
    with pytest.raises(RuntimeError, match="does not fit"):
        cpu_ops._C.decode_attention(
            query, key_cache, value_cache, torch.tensor([[0]], dtype=torch.int32), lens, 0.1
        )
    qkv = torch.randn(1, (HEADS + 2 * KV_HEADS) * HEAD_DIM)
    cos = sin = torch.ones(1, HEAD_DIM)
    with pytest.raises(RuntimeError, match="past the cache"):
        cpu_ops._C.rotary_store_kv(
            qkv, cos, sin, HEADS + KV_HEADS, HEADS, KV_HEADS, torch.tensor([256]), key_cache, value_cache
        )
