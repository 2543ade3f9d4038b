"""The shrink/expand kernels' layout of LoRA weights (used off the CPU) and its per-step update.

For every decoder layer and fused linear layer, each packed PEFT module keeps stacked
``A[slots, R_max, in]`` and ``B[slots, out, R_max]`` (scale folded in) plus each slot's real rank,
the layout `loomlm.kernels.lora_shrink` / `lora_expand` read. The kernels' grid covers only the
step's active slots and stops at each slot's real rank; the update lands in the module's column
window of the fused output, so the base matmul stays one matmul.
"""

from __future__ import annotations

import torch

from loomlm.adapters.cpu_layout import ModuleWeights
from loomlm.adapters.spec import LoRABaseSpec
from loomlm.kernels import LoRAKernelMeta, LoRARanks, lora_expand, lora_shrink


class KernelLoRALayer:
    """One fused linear layer of one decoder layer: its modules' stacked A/B and slot ranks."""

    def __init__(
        self,
        modules: tuple[str, ...],
        spec: LoRABaseSpec,
        *,
        num_slots: int,
        max_rank: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.modules = modules
        in_features = spec.module_dims[modules[0]][0]
        self.widths = [spec.module_dims[m][1] for m in modules]
        self.offsets = [sum(self.widths[:i]) for i in range(len(modules))]
        self.a = [torch.zeros(num_slots, max_rank, in_features, dtype=dtype, device=device) for _ in modules]
        self.b = [torch.zeros(num_slots, w, max_rank, dtype=dtype, device=device) for w in self.widths]
        self.ranks = [
            LoRARanks(torch.zeros(num_slots, dtype=torch.int32, device=device), [0] * num_slots)
            for _ in modules
        ]
        # How many slots hold weights for each module: a module no slot targets is skipped.
        self._num_targeting = [0] * len(modules)

    def write(self, slot: int, weights: list[ModuleWeights]) -> None:
        """Set ``slot`` to per-module ``(A [r, in], B [out, r])`` (None: the module is not targeted)."""
        for index, pair in enumerate(weights):
            ranks = self.ranks[index]
            rank = 0 if pair is None else pair[0].shape[0]
            self._num_targeting[index] += (rank > 0) - (ranks.host[slot] > 0)
            ranks.host[slot] = rank
            ranks.device[slot] = rank
            self.a[index][slot].zero_()
            self.b[index][slot].zero_()
            if pair is not None:
                self.a[index][slot, :rank].copy_(pair[0])
                self.b[index][slot, :, :rank].copy_(pair[1])

    def apply(self, x: torch.Tensor, out: torch.Tensor, meta: LoRAKernelMeta, scratch: torch.Tensor) -> None:
        """``out[t, window of module m] += x[t] @ A_m[slot(t)].T @ B_m[slot(t)].T`` for adapter tokens."""
        y = scratch[: x.shape[0]]
        for index, offset in enumerate(self.offsets):
            if self._num_targeting[index]:
                lora_shrink(x, self.a[index], y, meta, self.ranks[index])
                lora_expand(y, self.b[index], out, meta, self.ranks[index], out_offset=offset)


class KernelLoRAStep:
    """This step's LoRA through the shrink/expand kernels."""

    __slots__ = ("layers", "meta", "scratch")

    def __init__(self, layers: list[dict[str, KernelLoRALayer]], meta: LoRAKernelMeta, scratch: torch.Tensor):
        self.layers = layers
        self.meta = meta
        self.scratch = scratch

    def apply(self, layer: int, group: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        self.layers[layer][group].apply(x, out, self.meta, self.scratch)
        return out
