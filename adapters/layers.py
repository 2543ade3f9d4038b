"""The model's LoRA weights in device slots, and the per-step update its fused linear layers call.

`LoRAModelWeights` owns one of two layouts, chosen once: the kernels' stacked layout off the CPU
(`kernel_layout.py`), or the CPU's per-slot rows (`cpu_layout.py`, run by `cpu_step.py`). All
buffers are allocated once; writing an adapter into a slot copies its tensors in place. `step`
turns a step's `LoRAKernelMeta` into a `LoRAStep`, which the model calls after each fused matmul.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from loomlm.adapters.cpu_layout import CPULoRAGroup, ModuleWeights
from loomlm.adapters.cpu_scratch import BATCH_MAX_TOKENS, CPULoRAScratch
from loomlm.adapters.cpu_step import CPULoRAStep
from loomlm.adapters.kernel_layout import KernelLoRALayer, KernelLoRAStep
from loomlm.adapters.peft_loader import LoRAAdapter
from loomlm.adapters.spec import LoRABaseSpec
from loomlm.kernels import LoRAKernelMeta


class LoRAStep(Protocol):
    """One step's LoRA update; a step without adapter tokens gets no LoRAStep at all."""

    def apply(self, layer: int, group: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Add the update of fused layer ``group`` (a key of ``LoRABaseSpec.groups``) of decoder layer
        ``layer`` for input ``x`` into ``out`` (the base matmul's output) and return ``out``."""
        ...


class LoRAModelWeights:
    """Every layer's LoRA weights for ``num_slots`` adapters of rank <= ``max_rank``, sized once."""

    def __init__(
        self,
        spec: LoRABaseSpec,
        *,
        num_slots: int,
        max_rank: int,
        max_num_tokens: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        use_kernels: bool | None = None,
        cpu_batch_max_tokens: int = BATCH_MAX_TOKENS,
        cpu_native: bool | None = None,
        int8: bool = False,
        int8_activations: bool = False,
    ) -> None:
        """``use_kernels``: the shrink/expand kernel layout and calls (default: off the CPU only).
        ``cpu_batch_max_tokens``: on the CPU layout, the most tokens a slot may have in a step to run
        batched with same-layout slots (see `loomlm.adapters.cpu_step`; 0 runs every slot alone).
        ``cpu_native``: run slots of up to ``native_max_tokens`` tokens (`cpu_scratch.py`) in C++ instead
        (`loomlm.adapters.cpu_native`; default: where the extension is built and the weights are float32).
        ``int8``: round the weights to int8 and keep a packed int8 copy for the C++ path (CPU layout,
        float32; `loomlm.adapters.cpu_layout`); ``int8_activations``: its kernels may quantize the
        activations too (for a base that quantizes its own)."""
        self.spec = spec
        self.num_slots = num_slots
        self.max_rank = max_rank
        device = torch.device(device)
        self.use_kernels = device.type != "cpu" if use_kernels is None else use_kernels
        if not self.use_kernels and device.type != "cpu":
            raise ValueError(f"the CPU LoRA layout needs device 'cpu', got {device}; use the kernels")
        if int8 and (self.use_kernels or dtype != torch.float32):
            raise ValueError(
                "int8 LoRA weights run on the CPU layout with float32 weights (lora_dtype='auto' elsewhere)"
            )
        self.kernel_layers: list[dict[str, KernelLoRALayer]] = []
        self.cpu_groups: dict[str, CPULoRAGroup] = {}
        if self.use_kernels:
            self.kernel_layers = [
                {
                    group: KernelLoRALayer(
                        modules, spec, num_slots=num_slots, max_rank=max_rank, dtype=dtype, device=device
                    )
                    for group, modules in spec.groups.items()
                }
                for _ in range(spec.num_layers)
            ]
            self.kernel_scratch = torch.zeros(max_num_tokens, max_rank, dtype=dtype, device=device)
        else:
            self.cpu_groups = {
                group: CPULoRAGroup(
                    modules,
                    spec,
                    num_slots=num_slots,
                    max_rank=max_rank,
                    dtype=dtype,
                    int8=int8,
                    int8_activations=int8_activations,
                )
                for group, modules in spec.groups.items()
            }
            self.cpu_scratch = CPULoRAScratch(
                self.cpu_groups, num_slots, max_rank, max_num_tokens, cpu_batch_max_tokens, cpu_native
            )

    def write_slot(self, slot: int, adapter: LoRAAdapter) -> None:
        """Copy ``adapter`` into ``slot`` (every module it does not target gets rank 0)."""
        if not 0 <= slot < self.num_slots:
            raise ValueError(f"slot {slot} is outside [0, {self.num_slots})")
        if adapter.max_rank > self.max_rank:
            raise ValueError(f"adapter {adapter.name!r} has rank {adapter.max_rank} > {self.max_rank}")
        self._write(slot, lambda layer, module: adapter.weights.get((layer, module)))

    def clear_slot(self, slot: int) -> None:
        self._write(slot, lambda layer, module: None)

    def _write(self, slot: int, weight_of: Callable[[int, str], ModuleWeights]) -> None:
        if self.use_kernels:
            for layer, groups in enumerate(self.kernel_layers):
                for packed in groups.values():
                    packed.write(slot, [weight_of(layer, module) for module in packed.modules])
            return
        for group in self.cpu_groups.values():
            per_layer = [
                [weight_of(layer, m) for m in group.modules] for layer in range(self.spec.num_layers)
            ]
            group.write(slot, per_layer)

    def step(self, meta: LoRAKernelMeta) -> LoRAStep:
        if self.use_kernels:
            return KernelLoRAStep(self.kernel_layers, meta, self.kernel_scratch)
        return CPULoRAStep(self.cpu_groups, self.cpu_scratch, meta)
