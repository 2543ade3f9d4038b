"""KV store: reference and Triton write exactly the mapped slots, skip padding, touch nothing else."""

from __future__ import annotations

import os

import pytest
import torch

from loomlm.kernels import store_kv, store_kv_ref, store_kv_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 set before triton is imported",
)


def make_case(num_tokens, num_blocks, block_size, num_kv_heads, head_dim, num_padding, dtype, slot_dtype):
    gen = torch.Generator().manual_seed(num_tokens * 7 + block_size)
    key = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    value = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    key_cache = torch.randn(shape, generator=gen)
    value_cache = torch.randn(shape, generator=gen)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[torch.randperm(num_tokens, generator=gen)[:num_padding]] = -1
    tensors = [t.to(DEVICE, dtype) for t in (key, value, key_cache, value_cache)]
    return (*tensors, slots.to(DEVICE, slot_dtype))


def expected_caches(key, value, key_cache, value_cache, slot_mapping):
    """Slot-by-slot Python loop: the obvious semantics."""
    key_cache, value_cache = key_cache.clone(), value_cache.clone()
    block_size = key_cache.shape[1]
    for i, slot in enumerate(slot_mapping.tolist()):
        if slot >= 0:
            key_cache[slot // block_size, slot % block_size] = key[i]
            value_cache[slot // block_size, slot % block_size] = value[i]
    return key_cache, value_cache


CASES = [
    # (num_tokens, num_blocks, block_size, num_kv_heads, head_dim, num_padding, dtype, slot_dtype)
    (10, 6, 4, 2, 16, 0, torch.float32, torch.int64),
    (13, 5, 16, 3, 64, 4, torch.float32, torch.int64),
    (7, 3, 16, 4, 16, 2, torch.float16, torch.int32),
    (1, 2, 4, 1, 8, 0, torch.bfloat16, torch.int64),
]


@pytest.mark.parametrize("case_args", CASES)
def test_reference_writes_mapped_slots_only(case_args):
    key, value, key_cache, value_cache, slots = make_case(*case_args)
    want_k, want_v = expected_caches(key, value, key_cache, value_cache, slots)
    store_kv_ref(key, value, key_cache, value_cache, slots)
    assert torch.equal(key_cache, want_k) and torch.equal(value_cache, want_v)


@needs_triton
@pytest.mark.parametrize("case_args", CASES)
def test_triton_matches_reference(case_args):
    key, value, key_cache, value_cache, slots = make_case(*case_args)
    ref_k, ref_v = key_cache.clone(), value_cache.clone()
    store_kv_ref(key, value, ref_k, ref_v, slots)
    store_kv_triton(key, value, key_cache, value_cache, slots)
    assert torch.equal(key_cache, ref_k) and torch.equal(value_cache, ref_v)


def test_all_padding_and_empty_are_no_ops():
    key, value, key_cache, value_cache, slots = make_case(5, 4, 4, 2, 16, 5, torch.float32, torch.int64)
    before_k, before_v = key_cache.clone(), value_cache.clone()
    store_kv(key, value, key_cache, value_cache, slots)
    store_kv(key[:0], value[:0], key_cache, value_cache, slots[:0])
    assert torch.equal(key_cache, before_k) and torch.equal(value_cache, before_v)


def test_dispatch_matches_reference():
    key, value, key_cache, value_cache, slots = make_case(9, 4, 4, 2, 16, 3, torch.float32, torch.int64)
    want_k, want_v = expected_caches(key, value, key_cache, value_cache, slots)
    store_kv(key, value, key_cache, value_cache, slots)
    assert torch.equal(key_cache, want_k) and torch.equal(value_cache, want_v)


def test_rejects_mismatched_shapes():
    key, value, key_cache, value_cache, slots = make_case(4, 4, 4, 2, 16, 0, torch.float32, torch.int64)
    with pytest.raises(ValueError):
        store_kv_ref(key, value, key_cache, value_cache, slots[:3])
