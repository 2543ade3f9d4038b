"""Triton kernels for multi-LoRA shrink (x -> x A^T) and expand (out += y B^T), grid over ACTIVE slots.

Grid = (active slot groups, token blocks of the largest group, output-column blocks). A program reads
its group's token rows through `sorted_token_ids` / `slot_starts`, masks rows past the group's end and
the reduction / columns past the slot's real rank, and accumulates in fp32. In expand every
(token, column) belongs to exactly one program, so the read-modify-write of `out` needs no atomics.
All operands are addressed through their strides, so column-slice views (packed q/k/v) work as is.
"""

from __future__ import annotations

import os

import torch

from loomlm.kernels.lora_types import LoRAKernelMeta, LoRARanks, check_expand_args, check_shrink_args
from loomlm.kernels.triton_import import require_triton, tl, triton

TRITON_AVAILABLE = triton is not None
# Triton decides at import whether kernels are interpreted; its interpreter multiplies bf16 tiles as
# raw integers in tl.dot, so interpreted bf16 tiles are upcast to fp32 first (native runs keep bf16).
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _group_rows(sorted_ids_ptr, starts_ptr, group, pid_m, BLOCK_M: tl.constexpr):
        """Token rows (int64) of this program's block of its slot group, and the row mask."""
        start = tl.load(starts_ptr + group)
        end = tl.load(starts_ptr + group + 1)
        offs = start + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = offs < end
        rows = tl.load(sorted_ids_ptr + offs, mask=mask, other=0).to(tl.int64)
        return rows, mask

    @triton.jit
    def _lora_shrink_kernel(
        x_ptr,
        a_ptr,
        out_ptr,
        sorted_ids_ptr,
        starts_ptr,
        slots_ptr,
        ranks_ptr,
        in_features,
        total_cols,
        slice_width,
        stride_xt,
        stride_xk,
        stride_as,
        stride_ar,
        stride_ak,
        stride_ot,
        stride_or,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr,
        DOT_F32: tl.constexpr,
    ):
        group = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_n = tl.program_id(2)
        # Blocks past the end of a smaller group have no rows: leave at once.
        if pid_m * BLOCK_M < tl.load(starts_ptr + group + 1) - tl.load(starts_ptr + group):
            rows, mask_m = _group_rows(sorted_ids_ptr, starts_ptr, group, pid_m, BLOCK_M)
            slot = tl.load(slots_ptr + group).to(tl.int64)
            rank = tl.minimum(tl.load(ranks_ptr + slot), slice_width)
            cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            # Column c is row c of the packed A: live while it is within the rank of its slice.
            live = ((cols % slice_width) < rank) & (cols < total_cols)
            offs_k = tl.arange(0, BLOCK_K)
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            # Column blocks with no live column only store zeros (the expand reads all R columns).
            if tl.sum(live.to(tl.int32), axis=0) > 0:
                a_base = a_ptr + slot * stride_as
                for k0 in range(0, in_features, BLOCK_K):
                    ks = k0 + offs_k
                    x_tile = tl.load(
                        x_ptr + rows[:, None] * stride_xt + ks[None, :] * stride_xk,
                        mask=mask_m[:, None] & (ks[None, :] < in_features),
                        other=0.0,
                    )
                    # A^T tile [BLOCK_K, BLOCK_N]; rows of A at or past the rank read as zero.
                    a_tile = tl.load(
                        a_base + cols[None, :] * stride_ar + ks[:, None] * stride_ak,
                        mask=live[None, :] & (ks[:, None] < in_features),
                        other=0.0,
                    )
                    x_tile = x_tile.to(a_tile.dtype)
                    if DOT_F32:
                        x_tile, a_tile = x_tile.to(tl.float32), a_tile.to(tl.float32)
                    acc = tl.dot(x_tile, a_tile, acc, input_precision=PRECISION)
            out_ptrs = out_ptr + rows[:, None] * stride_ot + cols[None, :] * stride_or
            mask = mask_m[:, None] & (cols[None, :] < total_cols)
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _lora_expand_kernel(
        y_ptr,
        b_ptr,
        out_ptr,
        sorted_ids_ptr,
        starts_ptr,
        slots_ptr,
        ranks_ptr,
        out_features,
        max_rank,
        stride_yt,
        stride_yr,
        stride_bs,
        stride_bn,
        stride_br,
        stride_ot,
        stride_on,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr,
        DOT_F32: tl.constexpr,
    ):
        group = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_n = tl.program_id(2)
        slot = tl.load(slots_ptr + group).to(tl.int64)
        rank = tl.minimum(tl.load(ranks_ptr + slot), max_rank)
        # Nothing to add for blocks past the group's end or a slot whose adapter skips this module.
        if (pid_m * BLOCK_M < tl.load(starts_ptr + group + 1) - tl.load(starts_ptr + group)) & (rank > 0):
            rows, mask_m = _group_rows(sorted_ids_ptr, starts_ptr, group, pid_m, BLOCK_M)
            cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            offs_k = tl.arange(0, BLOCK_K)
            b_base = b_ptr + slot * stride_bs
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, rank, BLOCK_K):
                ks = k0 + offs_k
                y_tile = tl.load(
                    y_ptr + rows[:, None] * stride_yt + ks[None, :] * stride_yr,
                    mask=mask_m[:, None] & (ks[None, :] < rank),
                    other=0.0,
                )
                b_tile = tl.load(
                    b_base + cols[None, :] * stride_bn + ks[:, None] * stride_br,
                    mask=(cols[None, :] < out_features) & (ks[:, None] < rank),
                    other=0.0,
                )
                y_tile = y_tile.to(b_tile.dtype)
                if DOT_F32:
                    y_tile, b_tile = y_tile.to(tl.float32), b_tile.to(tl.float32)
                acc = tl.dot(y_tile, b_tile, acc, input_precision=PRECISION)
            out_ptrs = out_ptr + rows[:, None] * stride_ot + cols[None, :] * stride_on
            mask = mask_m[:, None] & (cols[None, :] < out_features)
            current = tl.load(out_ptrs, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptrs, (current + acc).to(out_ptr.dtype.element_ty), mask=mask)


def _block(n: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(max(n, 1))))


def _dot_options(dtype: torch.dtype) -> dict:
    upcast = _INTERPRETED and dtype == torch.bfloat16
    # fp32 tiles ask for exact fp32 products (tf32 would break fp32 parity); half types ignore it.
    precision = "ieee" if dtype == torch.float32 or upcast else "tf32"
    return {"PRECISION": precision, "DOT_F32": upcast}


def _check_device(tensor: torch.Tensor, meta: LoRAKernelMeta, ranks: LoRARanks) -> None:
    require_triton()
    for name, other in (("meta", meta.sorted_token_ids), ("ranks", ranks.device)):
        if other.device != tensor.device:
            raise ValueError(f"{name} tensors are on {other.device}, the activations on {tensor.device}")


def lora_shrink_triton(
    x: torch.Tensor,
    lora_a: torch.Tensor,
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    ranks: LoRARanks,
    *,
    num_slices: int = 1,
) -> None:
    """Triton version of `lora_shrink_ref` (same contract)."""
    check_shrink_args(x, lora_a, out, meta, ranks, num_slices)
    _check_device(x, meta, ranks)
    if not meta.has_lora:
        return
    in_features, total = x.shape[1], lora_a.shape[1]
    block_m = _block(meta.max_tokens_per_slot, 16, 64)
    block_n = _block(total, 16, 64)
    blocks_m = triton.cdiv(meta.max_tokens_per_slot, block_m)
    grid = (meta.num_active, blocks_m, triton.cdiv(total, block_n))
    _lora_shrink_kernel[grid](
        x,
        lora_a,
        out,
        meta.sorted_token_ids,
        meta.slot_starts,
        meta.active_slots,
        ranks.device,
        in_features,
        total,
        total // num_slices,
        x.stride(0),
        x.stride(1),
        lora_a.stride(0),
        lora_a.stride(1),
        lora_a.stride(2),
        out.stride(0),
        out.stride(1),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=_block(in_features, 16, 64),
        **_dot_options(lora_a.dtype),
    )


def lora_expand_triton(
    y: torch.Tensor,
    lora_b: torch.Tensor,
    out: torch.Tensor,
    meta: LoRAKernelMeta,
    ranks: LoRARanks,
    *,
    out_offset: int = 0,
) -> None:
    """Triton version of `lora_expand_ref` (same contract)."""
    check_expand_args(y, lora_b, out, meta, ranks, out_offset)
    _check_device(y, meta, ranks)
    if not meta.has_lora:
        return
    out_features, max_rank = lora_b.shape[1], lora_b.shape[2]
    window = out[:, out_offset : out_offset + out_features]  # a view: the kernel writes through it
    block_m = _block(meta.max_tokens_per_slot, 16, 64)
    block_n = _block(out_features, 16, 64)
    blocks_m = triton.cdiv(meta.max_tokens_per_slot, block_m)
    grid = (meta.num_active, blocks_m, triton.cdiv(out_features, block_n))
    _lora_expand_kernel[grid](
        y,
        lora_b,
        window,
        meta.sorted_token_ids,
        meta.slot_starts,
        meta.active_slots,
        ranks.device,
        out_features,
        max_rank,
        y.stride(0),
        y.stride(1),
        lora_b.stride(0),
        lora_b.stride(1),
        lora_b.stride(2),
        window.stride(0),
        window.stride(1),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=_block(max_rank, 16, 64),
        **_dot_options(lora_b.dtype),
    )
