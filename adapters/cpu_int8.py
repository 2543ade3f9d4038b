"""The int8 copy of one fused layer's LoRA rows (``lora_dtype="int8"``), which the C++ decode path reads.

A slot's weights are rounded to int8 with one scale per rank component (a row of A, a column of B),
and the float32 row is overwritten with the rounded values: every path (per adapter, batched, C++)
then computes with the same weights. The copy packs them in blocks of 16 columns, the layout of
``csrc/lora_ops.h``, so the kernel reads each slot front to back at a quarter of float32's bytes.
"""

from __future__ import annotations

import torch

BLOCK = 16  # columns per block (csrc/lora_ops.h: kLoRABlock)


def blocks(n: int) -> int:
    return -(-n // BLOCK)


def round_to_int8(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` rounded to int8, one symmetric scale per slice along ``dim`` (that dim reduced to 1);
    an all-zero slice gets scale 1."""
    scale = w.abs().amax(dim=dim, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(w / scale).clamp_(-127, 127).to(torch.int8), scale


def pack_columns(q: torch.Tensor) -> torch.Tensor:
    """[depth, n] -> [ceil(n/16), depth, 16], zero-padded, flattened: each block of columns contiguous."""
    depth, n = q.shape
    padded = torch.zeros(depth, blocks(n) * BLOCK, dtype=q.dtype)
    padded[:, :n] = q
    return padded.view(depth, -1, BLOCK).transpose(0, 1).reshape(-1)


class Int8LoRARows:
    """``packed`` int8 [layers, slots, bytes] and ``scales`` float32 [layers, slots, n]: per rank
    component j of a slot, A's scale times B's (zero past the slot's rank components)."""

    def __init__(
        self, num_layers: int, num_slots: int, in_features: int, widths: tuple[int, ...], max_rank: int
    ):
        max_components = blocks(len(widths) * max_rank) * BLOCK
        capacity = max_components * in_features + sum(blocks(w) * BLOCK * max_rank for w in widths)
        self.packed = torch.zeros(num_layers, num_slots, capacity, dtype=torch.int8)
        self.scales = torch.zeros(num_layers, num_slots, max_components, dtype=torch.float32)

    def clear(self, slot: int) -> None:
        self.packed[:, slot].zero_()
        self.scales[:, slot].zero_()

    def write(self, layer: int, slot: int, a_t: torch.Tensor, b_ts: list[torch.Tensor]) -> None:
        """Round ``a_t`` [in, k*c] and each module's ``b_t`` [c, w] (views into the float32 row, in the
        slot's module order) to int8 in place, and pack them into the copy."""
        q_a, scale_a = round_to_int8(a_t, dim=0)
        a_t.copy_(q_a * scale_a)
        parts, scales = [pack_columns(q_a)], []
        for j, b_t in enumerate(b_ts):
            q_b, scale_b = round_to_int8(b_t, dim=1)
            b_t.copy_(q_b * scale_b)
            parts.append(pack_columns(q_b))
            c = b_t.shape[0]
            scales.append(scale_a[0, j * c : (j + 1) * c] * scale_b[:, 0])
        packed = torch.cat(parts)
        self.packed[layer, slot, : packed.numel()] = packed
        components = torch.cat(scales)
        self.scales[layer, slot, : components.numel()] = components
