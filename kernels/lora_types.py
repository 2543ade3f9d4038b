"""Types shared by the multi-LoRA kernels: the per-step `LoRAKernelMeta`, the per-layer `LoRARanks`
and the argument checks that the reference and the Triton path both run (same errors on every path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True)
class LoRAKernelMeta:
    """Which tokens of a step use which adapter slot, grouped by slot. Views of the builder's buffers:
    valid until its next `build`."""

    num_tokens: int  # tokens in the step (rows of x / out)
    sorted_token_ids: torch.Tensor  # int32 [num_lora_tokens]: rows grouped by slot (order of active_slots)
    slot_starts: torch.Tensor  # int32 [num_active + 1]: group i is sorted_token_ids[starts[i]:starts[i+1]]
    active_slots: torch.Tensor  # int32 [num_active]: ascending slot id of group i
    max_tokens_per_slot: int
    # Host copies for the CPU path and the launch grid (no device syncs):
    active_slots_host: list[int]
    slot_starts_host: list[int]
    # First row of group i when its rows are exactly [row, row + count) (the common case: a request's
    # tokens are contiguous), else -1; lets the CPU path use slices instead of gather/scatter.
    group_row_starts_host: list[int]

    @property
    def num_active(self) -> int:
        return len(self.active_slots_host)

    @property
    def has_lora(self) -> bool:
        return len(self.active_slots_host) > 0


@dataclass(slots=True)
class LoRARanks:
    """Real rank of each slot for one layer/module (0: the slot's adapter does not target it)."""

    device: torch.Tensor  # int32 [num_slots], on the device of the LoRA weights
    host: list[int]  # the same values


def _check_common(x: torch.Tensor, out: torch.Tensor, meta: LoRAKernelMeta, name: str) -> None:
    if x.dim() != 2 or out.dim() != 2:
        raise ValueError(f"{name}: input and out must be 2-D [T, features], got {x.shape} / {out.shape}")
    if x.shape[0] != meta.num_tokens or out.shape[0] != meta.num_tokens:
        raise ValueError(
            f"{name}: input rows {x.shape[0]} / out rows {out.shape[0]} must equal meta.num_tokens "
            f"{meta.num_tokens} (build the metadata for this step's token->slot map)"
        )


def check_shrink_args(x, lora_a, out, meta, ranks, num_slices: int) -> None:
    _check_common(x, out, meta, "lora_shrink")
    if lora_a.dim() != 3 or lora_a.shape[2] != x.shape[1]:
        raise ValueError(f"lora_shrink: lora_a must be [slots, R, {x.shape[1]}], got {tuple(lora_a.shape)}")
    if num_slices < 1 or lora_a.shape[1] % num_slices:
        raise ValueError(
            f"lora_shrink: num_slices={num_slices} must be >= 1 and divide lora_a's {lora_a.shape[1]} rows"
        )
    if out.shape[1] < lora_a.shape[1]:
        raise ValueError(f"lora_shrink: out has {out.shape[1]} columns, needs >= R = {lora_a.shape[1]}")
    if len(ranks.host) != lora_a.shape[0]:
        raise ValueError(f"lora_shrink: ranks cover {len(ranks.host)} slots, lora_a has {lora_a.shape[0]}")


def check_expand_args(y, lora_b, out, meta, ranks, out_offset: int) -> None:
    _check_common(y, out, meta, "lora_expand")
    if lora_b.dim() != 3 or lora_b.shape[2] != y.shape[1]:
        raise ValueError(f"lora_expand: lora_b must be [slots, N, {y.shape[1]}], got {tuple(lora_b.shape)}")
    if out_offset < 0 or out.shape[1] < out_offset + lora_b.shape[1]:
        raise ValueError(
            f"lora_expand: out has {out.shape[1]} columns, needs >= out_offset {out_offset} + N "
            f"{lora_b.shape[1]}"
        )
    if len(ranks.host) != lora_b.shape[0]:
        raise ValueError(f"lora_expand: ranks cover {len(ranks.host)} slots, lora_b has {lora_b.shape[0]}")
