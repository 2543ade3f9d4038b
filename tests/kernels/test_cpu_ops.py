"""The C++ per-layer ops (RMSNorm with the residual add, rotary + KV store, SiLU-and-multiply,
decode attention over the paged cache) equal their torch references, on float32 and bfloat16 caches
(stored rounded as torch rounds, read exactly widened), and refuse indices that would read or write
outside the cache instead of touching memory there."""

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


def test_a_bfloat16_cache_stores_keys_and_values_rounded_as_torch_rounds():
    torch.manual_seed(0)
    tokens = 6
    qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD_DIM)
    values = qkv[:, (HEADS + KV_HEADS) * HEAD_DIM :]  # stored unrotated: the rounding's edge cases
    ties = (values.view(torch.int32) & ~0xFFFF) | 0x8000  # halfway between two bfloat16s
    values[:, :32] = ties[:, :32].view(torch.float32)
    values[:, 32:36] = torch.tensor([float("inf"), -float("inf"), float("nan"), -float("nan")])
    values[:, 36] = 3.4e38  # rounds up past the largest bfloat16: to infinity, as torch's does
    angles = torch.randn(tokens, HEAD_DIM // 2)
    cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
    slots = torch.tensor([3, -1, 100, 0, 255, 17])
    ours = (qkv.clone(), *(c.bfloat16() for c in caches()))
    ref = (qkv.clone(), *(c.bfloat16() for c in caches()))
    cpu_ops._C.rotary_store_kv(ours[0], cos, sin, HEADS + KV_HEADS, HEADS, KV_HEADS, slots, ours[1], ours[2])
    cpu_ops.rotary_store_kv_ref(ref[0], cos, sin, HEADS, KV_HEADS, slots, ref[1], ref[2])
    assert torch.equal(ours[0].view(torch.int32), ref[0].view(torch.int32))
    for got, want in zip(ours[1:], ref[1:], strict=True):
        # Bit for bit, but a NaN's bits: torch's vector and scalar conversions write different NaNs.
        number = ~want.isnan()
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.view(torch.int16)[number], want.view(torch.int16)[number])
    assert int(ours[2].isnan().sum()) == 5 * 2  # two NaNs in each stored token's values


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


def decode_on_threads(threads, query, key_cache, value_cache, tables, lens):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return cpu_ops._C.decode_attention(query, key_cache, value_cache, tables, lens, 0.125)
    finally:
        torch.set_num_threads(before)


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
    got = decode_on_threads(threads, query, key_cache, value_cache, tables, lens)
    want = cpu_ops.decode_attention_ref(query, key_cache, value_cache, tables, lens, 0.125)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


needs_avx2 = pytest.mark.skipif(
    not cpu_ops.prefill_attention_available(), reason="bfloat16 caches need the AVX2 attention kernels"
)


@needs_avx2
@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("head_dim", [64, 136])
@pytest.mark.parametrize("threads", [1, 8])
def test_decode_attention_reads_a_bfloat16_cache_exactly_widened(group, head_dim, threads):
    """Equal to the reference over the same cache widened to float32 (a bfloat16 widens exactly)."""
    key_cache, value_cache = (c.bfloat16() for c in caches(num_blocks=160, block_size=16, head_dim=head_dim))
    torch.manual_seed(group + head_dim)
    lens = torch.tensor([3, 129, 300, 17, 64], dtype=torch.int32)
    tables = torch.stack([torch.randperm(160)[:64] for _ in lens]).to(torch.int32)
    query = torch.randn(len(lens), KV_HEADS * group, head_dim)
    got = decode_on_threads(threads, query, key_cache, value_cache, tables, lens)
    widened = (key_cache.float(), value_cache.float())
    want = cpu_ops.decode_attention_ref(query, *widened, tables, lens, 0.125)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_which_caches_the_extension_reads():
    key_cache, _ = caches()
    assert cpu_ops.native_cache(key_cache)
    assert cpu_ops.native_cache(key_cache.bfloat16()) == cpu_ops.prefill_attention_available()
    assert not cpu_ops.native_cache(key_cache.half())
    assert not cpu_ops.native_cache(key_cache.transpose(0, 1))
    assert not cpu_ops.native_cache(caches(head_dim=12)[0].bfloat16())  # no vector path for 12


def test_mismatched_and_unreadable_caches_are_refused():
    key_cache, value_cache = caches()
    query = torch.randn(1, HEADS, HEAD_DIM)
    lens, tables = torch.tensor([9], dtype=torch.int32), torch.tensor([[0, 1]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="differ in dtype"):
        cpu_ops._C.decode_attention(query, key_cache, value_cache.bfloat16(), tables, lens, 0.1)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        cpu_ops._C.decode_attention(query, key_cache.half(), value_cache.half(), tables, lens, 0.1)
    if not cpu_ops.prefill_attention_available():
        return
    small = tuple(c.bfloat16() for c in caches(head_dim=12))
    with pytest.raises(RuntimeError, match="head_dim a multiple of 8"):
        cpu_ops._C.decode_attention(torch.randn(1, HEADS, 12), *small, tables, lens, 0.1)


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
