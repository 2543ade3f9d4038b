"""KV store: write the new tokens' keys and values into the paged cache by slot mapping.

Owns `store_kv_ref` (pure torch, the CPU path), `store_kv_triton` (one program per token) and the
`store_kv` dispatcher. A slot is `block_id * block_size + offset_in_block`; slots < 0 are padding.
"""

from __future__ import annotations

import torch

from loomlm.kernels.triton_import import require_triton, tl, triton


def _check_shapes(key, value, key_cache, value_cache, slot_mapping) -> None:
    if key.shape != value.shape or key.dim() != 3:
        raise ValueError(f"key/value must both be [T, kv_heads, head_dim], got {key.shape} / {value.shape}")
    if key_cache.shape != value_cache.shape or key_cache.shape[2:] != key.shape[1:]:
        raise ValueError(f"cache shape {tuple(key_cache.shape)} does not match key shape {tuple(key.shape)}")
    if slot_mapping.shape != (key.shape[0],):
        raise ValueError(f"slot_mapping must be [{key.shape[0]}], got {tuple(slot_mapping.shape)}")


def store_kv_ref(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write key[i] / value[i] into flat slot `slot_mapping[i]` of the caches, in place; skip slots < 0."""
    _check_shapes(key, value, key_cache, value_cache, slot_mapping)
    if key.shape[0] == 0:
        return
    num_kv_heads, head_dim = key.shape[1], key.shape[2]
    slots = slot_mapping.to(torch.int64)
    # The host sync of `.any()` is cheap on CPU; padding is rare, so the common case is one index_copy_.
    if bool((slots < 0).any()):
        keep = (slots >= 0).nonzero().squeeze(1)
        slots, key, value = slots[keep], key[keep], value[keep]
    # view() (not reshape) so that a non-contiguous cache fails loudly instead of writing into a copy.
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, key.to(key_cache.dtype))
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, value.to(value_cache.dtype))


if triton is not None:

    @triton.jit
    def _store_kv_kernel(
        key_ptr,
        value_ptr,
        key_cache_ptr,
        value_cache_ptr,
        slot_mapping_ptr,
        num_kv_heads,
        head_dim,
        block_size,
        stride_kt,
        stride_kh,
        stride_vt,
        stride_vh,
        stride_kc_block,
        stride_kc_offset,
        stride_kc_head,
        stride_vc_block,
        stride_vc_offset,
        stride_vc_head,
        BLOCK_H: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        # One program per token: it copies all [kv_heads, head_dim] of that token.
        token = tl.program_id(0)
        slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
        block_id = slot // block_size
        offset_in_block = slot % block_size
        heads = tl.arange(0, BLOCK_H)[:, None]
        dims = tl.arange(0, BLOCK_D)[None, :]
        # Padding slots get an empty head range (a scalar & a 2-D mask trips the interpreter).
        heads_to_copy = tl.where(slot >= 0, num_kv_heads, 0)
        mask = (heads < heads_to_copy) & (dims < head_dim)
        token64 = token.to(tl.int64)
        k = tl.load(key_ptr + token64 * stride_kt + heads * stride_kh + dims, mask=mask)
        v = tl.load(value_ptr + token64 * stride_vt + heads * stride_vh + dims, mask=mask)
        kc_base = block_id * stride_kc_block + offset_in_block * stride_kc_offset
        vc_base = block_id * stride_vc_block + offset_in_block * stride_vc_offset
        tl.store(key_cache_ptr + kc_base + heads * stride_kc_head + dims, k, mask=mask)
        tl.store(value_cache_ptr + vc_base + heads * stride_vc_head + dims, v, mask=mask)


def store_kv_triton(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Triton version of `store_kv_ref` (same contract). Needs unit stride on head_dim everywhere."""
    require_triton()
    _check_shapes(key, value, key_cache, value_cache, slot_mapping)
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    # The kernel addresses head_dim with unit stride; copies here are rare (callers pass contiguous rows).
    if key.stride(2) != 1:
        key = key.contiguous()
    if value.stride(2) != 1:
        value = value.contiguous()
    if key_cache.stride(3) != 1 or value_cache.stride(3) != 1:
        raise ValueError("key_cache/value_cache must have unit stride on head_dim")
    _store_kv_kernel[(num_tokens,)](
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping.contiguous(),
        num_kv_heads,
        head_dim,
        key_cache.shape[1],
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        key_cache.stride(0),
        key_cache.stride(1),
        key_cache.stride(2),
        value_cache.stride(0),
        value_cache.stride(1),
        value_cache.stride(2),
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
    )


def store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store the new tokens' K/V: the Triton kernel on CUDA (when triton imports), else the reference."""
    if key_cache.is_cuda and triton is not None:
        store_kv_triton(key, value, key_cache, value_cache, slot_mapping)
    else:
        store_kv_ref(key, value, key_cache, value_cache, slot_mapping)
