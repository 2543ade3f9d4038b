"""Multi-LoRA shrink/expand: each token's low-rank update through its own adapter slot (punica style).

Owns the torch references `lora_shrink_ref` / `lora_expand_ref` (the test oracle and the fallback for
this layout without Triton: one pair of matmuls per ACTIVE adapter at its real rank, never a
per-token loop; the engine's CPU path uses its own layout, `loomlm.adapters.cpu_step`) and the dispatchers
`lora_shrink` / `lora_expand` (Triton on CUDA, else the reference). Re-exports the per-step
`LoRAKernelMeta` (built by `loomlm.adapters.metadata`) and the per-layer `LoRARanks` from
`lora_types.py`; the Triton kernels live in `lora_triton.py`. Tokens of slot -1 are in no group, so
their rows are never touched.
"""

from __future__ import annotations

import torch

from loomlm.kernels.lora_triton import TRITON_AVAILABLE, lora_expand_triton, lora_shrink_triton
from loomlm.kernels.lora_types import LoRAKernelMeta, LoRARanks, check_expand_args, check_shrink_args


def _slot_rank(ranks: LoRARanks, slot: int, max_rank: int) -> int:
    rank = ranks.host[slot]
    if not 0 <= rank <= max_rank:
        raise ValueError(f"slot {slot} has rank {rank}, outside [0, {max_rank}] of the stacked weights")
    return rank


def _shrink_group(x_rows: torch.Tensor, a_slot: torch.Tensor, rank: int, num_slices: int) -> torch.Tensor:
    """[n, P*R] shrink of one slot's rows: each slice's first `rank` columns, zeros after them."""
    x_rows = x_rows.to(a_slot.dtype)
    width = a_slot.shape[0] // num_slices
    if rank == width:
        return x_rows @ a_slot.T
    result = x_rows.new_zeros(x_rows.shape[0], num_slices, width)
    if rank:
        # One batched matmul over the slices' leading `rank` rows (a strided view, no weight copy).
        a_live = a_slot.unflatten(0, (num_slices, width))[:, :rank]
        result[:, :, :rank] = torch.matmul(x_rows, a_live.transpose(1, 2)).transpose(0, 1)
    return result.flatten(1)


def lora_shrink_ref(
    x: torch.Tensor,
    lora_a: torch.Tensor,
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    ranks: LoRARanks,
    *,
    num_slices: int = 1,
) -> None:
    """For tokens t of slot s: out[t, :r_s] = x[t] @ lora_a[s, :r_s].T and out[t, r_s:R] = 0, in place.

    With num_slices=P, lora_a is P slices of R = rows/P stacked along its rows (packed q/k/v) and each
    slice p fills out[t, p*R : p*R + r_s] and zeroes the rest of its R columns. Rows of tokens without
    an adapter and columns >= P*R are left untouched."""
    check_shrink_args(x, lora_a, out, meta, ranks, num_slices)
    total = lora_a.shape[1]
    starts = meta.slot_starts_host
    for i, slot in enumerate(meta.active_slots_host):
        rank = _slot_rank(ranks, slot, total // num_slices)
        row = meta.group_row_starts_host[i]
        if row >= 0:  # contiguous rows: plain slices, no gather/scatter
            end = row + starts[i + 1] - starts[i]
            out[row:end, :total] = _shrink_group(x[row:end], lora_a[slot], rank, num_slices)
            continue
        ids = meta.sorted_token_ids[starts[i] : starts[i + 1]]
        out[ids, :total] = _shrink_group(x.index_select(0, ids), lora_a[slot], rank, num_slices).to(out.dtype)


def lora_expand_ref(
    y: torch.Tensor,
    lora_b: torch.Tensor,
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    ranks: LoRARanks,
    *,
    out_offset: int = 0,
) -> None:
    """For tokens t of slot s: out[t, off:off+N] += y[t, :r_s] @ lora_b[s, :, :r_s].T, in place.
    Rows of tokens without an adapter and columns outside [off, off+N) are left untouched."""
    check_expand_args(y, lora_b, out, meta, ranks, out_offset)
    max_rank, n_out = lora_b.shape[2], lora_b.shape[1]
    window = out[:, out_offset : out_offset + n_out]
    starts = meta.slot_starts_host
    for i, slot in enumerate(meta.active_slots_host):
        rank = _slot_rank(ranks, slot, max_rank)
        if rank == 0:
            continue
        row = meta.group_row_starts_host[i]
        count = starts[i + 1] - starts[i]
        if row >= 0:
            delta = y[row : row + count, :rank].to(lora_b.dtype) @ lora_b[slot, :, :rank].T
            window[row : row + count] += delta.to(out.dtype)
            continue
        ids = meta.sorted_token_ids[starts[i] : starts[i + 1]]
        delta = y.index_select(0, ids)[:, :rank].to(lora_b.dtype) @ lora_b[slot, :, :rank].T
        window.index_add_(0, ids, delta.to(out.dtype))


def lora_shrink(
    x: torch.Tensor,
    lora_a: torch.Tensor,
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    ranks: LoRARanks,
    *,
    num_slices: int = 1,
) -> None:
    """Shrink through each token's slot: the Triton kernel on CUDA (when triton imports), else the
    reference. Callers skip the call entirely when `not meta.has_lora`."""
    if x.is_cuda and TRITON_AVAILABLE:
        lora_shrink_triton(x, lora_a, out, meta, ranks, num_slices=num_slices)
    else:
        lora_shrink_ref(x, lora_a, out, meta, ranks, num_slices=num_slices)


def lora_expand(
    y: torch.Tensor,
    lora_b: torch.Tensor,
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    ranks: LoRARanks,
    *,
    out_offset: int = 0,
) -> None:
    """Expand-and-add through each token's slot: Triton on CUDA, else the reference."""
    if y.is_cuda and TRITON_AVAILABLE:
        lora_expand_triton(y, lora_b, out, meta, ranks, out_offset=out_offset)
    else:
        lora_expand_ref(y, lora_b, out, meta, ranks, out_offset=out_offset)
