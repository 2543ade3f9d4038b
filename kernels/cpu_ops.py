"""The float32 per-layer ops of a CPU step in C++ (`loomlm._C`, csrc/model_ops.cpp), each beside its
torch reference with the same signature (`*_ref`: the oracle, and the path for other dtypes,
devices, or an install without the extension).

Torch runs each of these as several small ops; at batch 1 their dispatch, not their arithmetic,
is the cost (about 30 torch calls a layer). `native_ops_apply` is the one decision of when the C++
versions run: the extension is built and the tensors are CPU float32 (`native_cache`: the KV cache
float32 or bfloat16)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from loomlm.kernels.kv_store import store_kv, store_kv_ref
from loomlm.kernels.native import _C
from loomlm.kernels.paged_attention_cpu import decode_batch, prefill_one


def native_ops_apply(x: torch.Tensor) -> bool:
    return native_ops_available(x.dtype, x.device)


def native_ops_available(dtype: torch.dtype, device: torch.device) -> bool:
    return _C is not None and torch.device(device).type == "cpu" and dtype == torch.float32


def native_cache(key_cache: torch.Tensor) -> bool:
    """Whether loomlm._C reads and writes this KV cache: contiguous float32, or bfloat16 where the
    AVX2 attention kernels run (head_dim a multiple of 8)."""
    if not key_cache.is_contiguous():
        return False
    if key_cache.dtype == torch.float32:
        return True
    bf16_readable = key_cache.shape[-1] % 8 == 0 and prefill_attention_available()
    return key_cache.dtype == torch.bfloat16 and bf16_readable


def rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """RMSNorm of ``x``'s rows; with ``residual``: ``residual += x`` in place first, and the sum is
    normalised (a pre-norm layer's residual add and norm in one)."""
    if residual is not None:
        x = residual.add_(x)
    return F.rms_norm(x, weight.shape, weight, eps)


def rotary_store_kv_ref(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    slot_mapping: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
) -> None:
    """In place on the packed ``qkv`` ``[T, (heads + 2 kv_heads) * head_dim]``: rotate the query and
    key heads by ``cos``/``sin`` ``[T, head_dim]`` (rotate-half form), then write keys and values to
    the cache slots (``slot_mapping``; slots < 0 skipped)."""
    keys, values = _rotate_qk_(qkv, cos, sin, num_heads, num_kv_heads, key_cache.shape[-1])
    store_kv_ref(keys, values, key_cache, value_cache, slot_mapping)


def _rotate_qk_(qkv, cos, sin, num_heads, num_kv_heads, head_dim) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the q and k heads of ``qkv`` in place; returns the (keys, values) head views."""
    heads = qkv.view(qkv.shape[0], -1, head_dim)
    qk = heads[:, : num_heads + num_kv_heads]
    half = head_dim // 2
    rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
    qk.copy_(qk * cos[:, None] + rotated * sin[:, None])
    return heads[:, num_heads : num_heads + num_kv_heads], heads[:, num_heads + num_kv_heads :]


def silu_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def decode_attention_ref(query, key_cache, value_cache, block_tables, seq_lens, scale) -> torch.Tensor:
    """Attention of single-query rows (row b is sequence b) over the paged cache: ``[seqs, heads, d]``."""
    max_seq_len = int(seq_lens.max()) if seq_lens.numel() else 0
    return decode_batch(query, key_cache, value_cache, block_tables, seq_lens, scale, max_seq_len, None)


def prefill_attention_ref(
    query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale
) -> torch.Tensor:
    """Causal attention of each sequence's chunk (rows ``query_start_loc[b]:[b + 1]``, the last q_len of
    its ``seq_lens[b]`` positions) over the paged cache: ``[rows, heads, d]``; other rows zero."""
    out = torch.zeros_like(query)
    starts, lens = query_start_loc.tolist(), seq_lens.tolist()
    for b, seq_len in enumerate(lens):
        if starts[b + 1] > starts[b]:
            rows = slice(starts[b], starts[b + 1])
            out[rows] = prefill_one(query[rows], key_cache, value_cache, block_tables[b], seq_len, scale)
    return out


def rms_norm(x, residual, weight, eps):
    if native_ops_apply(x) and weight.dtype == torch.float32:
        return _C.rms_norm(x, residual, weight, eps)
    return rms_norm_ref(x, residual, weight, eps)


def rotary_store_kv(qkv, cos, sin, num_heads, num_kv_heads, slot_mapping, key_cache, value_cache) -> None:
    if native_ops_apply(qkv) and native_cache(key_cache):
        _C.rotary_store_kv(
            qkv,
            cos,
            sin,
            num_heads + num_kv_heads,
            num_heads,
            num_kv_heads,
            slot_mapping,
            key_cache,
            value_cache,
        )
    else:  # the reference's math, with the store dispatched (Triton on CUDA)
        keys, values = _rotate_qk_(qkv, cos, sin, num_heads, num_kv_heads, key_cache.shape[-1])
        store_kv(keys, values, key_cache, value_cache, slot_mapping)


def silu_mul(gate_up):
    return (
        _C.silu_mul(gate_up)
        if native_ops_apply(gate_up) and gate_up.is_contiguous()
        else silu_mul_ref(gate_up)
    )


def decode_attention(query, key_cache, value_cache, block_tables, seq_lens, scale) -> torch.Tensor:
    if native_ops_apply(query) and native_cache(key_cache):
        tables = block_tables.to(torch.int32).contiguous()  # no-ops for the engine's own tensors
        lens = seq_lens.to(torch.int32).contiguous()
        return _C.decode_attention(query, key_cache, value_cache, tables, lens, scale)
    return decode_attention_ref(query, key_cache, value_cache, block_tables, seq_lens, scale)


@functools.cache
def prefill_attention_available() -> bool:
    return _C is not None and _C.prefill_attention_supported()


def prefill_attention(
    query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale
) -> torch.Tensor:
    if (
        prefill_attention_available()
        and native_ops_apply(query)
        and native_cache(key_cache)
        and query.shape[-1] % 8 == 0
    ):
        tables = block_tables.to(torch.int32).contiguous()  # no-ops for the engine's own tensors
        lens, starts = seq_lens.to(torch.int32).contiguous(), query_start_loc.to(torch.int32).contiguous()
        return _C.prefill_attention(query, key_cache, value_cache, tables, lens, starts, scale)
    return prefill_attention_ref(
        query, key_cache, value_cache, block_tables, seq_lens, query_start_loc, scale
    )
