"""The CPU layout of one fused linear layer's LoRA weights (e.g. ``qkv_proj``) across all decoder layers.

Each slot owns one row per decoder layer, preallocated at the configured maximum rank. A written slot
packs its row at ITS OWN rank ``c`` (the largest rank among its modules in this fused layer) and only
for the modules it targets: ``[A^T (in x k'c) | B_1^T (c x w_1) | ... | B_k'^T (c x w_k')]``. So a
slot's weights are one contiguous prefix of its row: the per-adapter path takes views, and the
batched path gathers the rows of same-layout slots with one copy into a scratch buffer and runs them
as one ``bmm``. Slots with the same `SlotLayout` (rank and module set) batch together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loomlm.adapters.cpu_int8 import Int8LoRARows
from loomlm.adapters.spec import LoRABaseSpec

# (A [r, in], B [out, r]) of one module, or None where the adapter does not target it.
ModuleWeights = tuple[torch.Tensor, torch.Tensor] | None


@dataclass(slots=True, frozen=True)
class SlotLayout:
    """How a slot packs its row: its rank and which of the fused layer's modules it holds."""

    rank: int  # 0: the slot's adapter targets none of this fused layer's modules
    modules: tuple[int, ...]  # indices into the fused layer's modules, in output-column order


EMPTY_LAYOUT = SlotLayout(0, ())


@dataclass(slots=True, frozen=True)
class ModulePart:
    """One targeted module of one slot in one decoder layer, for the per-adapter path."""

    y_column: int  # where its shrink output starts in y = x @ A^T
    rank: int  # its real rank in this layer (<= the slot's rank)
    b_t: torch.Tensor  # view [rank, width]: its B^T, scale folded in
    out_offset: int  # its window in the fused output
    width: int


@dataclass(slots=True, frozen=True)
class SlotLayerViews:
    """A slot's weights in one decoder layer: ``a_t`` [in, k'c] and the modules it targets there."""

    a_t: torch.Tensor
    parts: tuple[ModulePart, ...]


class CPULoRAGroup:
    """Every decoder layer's LoRA rows for one fused linear layer, in the CPU layout."""

    def __init__(
        self,
        modules: tuple[str, ...],
        spec: LoRABaseSpec,
        *,
        num_slots: int,
        max_rank: int,
        dtype: torch.dtype,
        int8: bool = False,
        int8_activations: bool = False,
    ) -> None:
        """``int8``: round every written slot to int8 and keep the packed copy (`cpu_int8.py`).
        ``int8_activations``: on a base that quantizes its activations, the C++ int8 kernels may too
        (AVX-512 VNNI: `csrc/lora_vnni.cpp`)."""
        if int8_activations and not int8:
            raise ValueError("int8 LoRA activations go with int8 LoRA weights (lora_dtype='int8')")
        self.int8_activations = int8_activations
        self.modules = modules
        self.in_features = spec.module_dims[modules[0]][0]
        self.widths = tuple(spec.module_dims[m][1] for m in modules)
        offsets, offset = [], 0
        for width in self.widths:
            offsets.append(offset)
            offset += width
        self.offsets = tuple(offsets)
        self.num_layers = spec.num_layers
        capacity = self.row_size(SlotLayout(max_rank, tuple(range(len(modules)))))
        self.rows = torch.zeros(spec.num_layers, num_slots, capacity, dtype=dtype)
        self.layouts = [EMPTY_LAYOUT] * num_slots
        # Per slot, per decoder layer: views for the per-adapter path (None: nothing in that layer).
        self.views: list[list[SlotLayerViews | None]] = [[None] * spec.num_layers for _ in range(num_slots)]
        self.int8 = (
            Int8LoRARows(self.num_layers, num_slots, self.in_features, self.widths, max_rank)
            if int8
            else None
        )

    def native_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the C++ path reads, [layers, slots, ...]: (rows, None), or the int8 copy and its scales."""
        if self.int8 is None:
            return self.rows, None
        return self.int8.packed, self.int8.scales

    def native_layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`native_tensors` of decoder layer ``layer``."""
        rows, scales = self.native_tensors()
        return rows[layer], None if scales is None else scales[layer]

    def row_size(self, layout: SlotLayout) -> int:
        """Floats a slot with ``layout`` uses in each row."""
        widths = sum(self.widths[m] for m in layout.modules)
        return layout.rank * (self.in_features * len(layout.modules) + widths)

    def a_t_size(self, layout: SlotLayout) -> int:
        return self.in_features * len(layout.modules) * layout.rank

    def write(self, slot: int, weights: list[list[ModuleWeights]]) -> None:
        """Set ``slot`` to ``weights[layer][module index]`` (None where a module is not targeted)."""
        present = tuple(m for m in range(len(self.modules)) if any(layer[m] is not None for layer in weights))
        rank = max((pair[0].shape[0] for layer in weights for pair in layer if pair is not None), default=0)
        old_size = self.row_size(self.layouts[slot])
        layout = SlotLayout(rank, present) if rank else EMPTY_LAYOUT
        self.rows[:, slot, : max(old_size, self.row_size(layout))].zero_()
        self.layouts[slot] = layout
        if self.int8 is not None:
            self.int8.clear(slot)
        self.views[slot] = [
            self._write_layer(slot, layer, weights[layer], layout) for layer in range(self.num_layers)
        ]

    def _write_layer(
        self, slot: int, layer: int, weights: list[ModuleWeights], layout: SlotLayout
    ) -> SlotLayerViews | None:
        if not layout.rank:
            return None
        row, c = self.rows[layer, slot], layout.rank
        a_size = self.a_t_size(layout)
        a_t = row[:a_size].view(self.in_features, len(layout.modules) * c)
        parts, b_ts, position = [], [], a_size
        for j, m in enumerate(layout.modules):
            b_t = row[position : position + c * self.widths[m]].view(c, self.widths[m])
            b_ts.append(b_t)
            position += c * self.widths[m]
            pair = weights[m]
            if pair is None:
                continue
            a, b = pair
            r = a.shape[0]
            a_t[:, j * c : j * c + r].copy_(a.t())
            b_t[:r].copy_(b.t())
            parts.append(ModulePart(j * c, r, b_t[:r], self.offsets[m], self.widths[m]))
        if parts and self.int8 is not None:
            self.int8.write(layer, slot, a_t, b_ts)
        return SlotLayerViews(a_t, tuple(parts)) if parts else None
