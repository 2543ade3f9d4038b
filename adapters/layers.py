"""The model's LoRA weights in device slots, and the per-step update the linear layers call.

For every decoder layer and every fused linear layer of the forward (``qkv_proj``, ``o_proj``,
``gate_up_proj``, ``down_proj``) each packed PEFT module (q, k, v / gate, up / ...) keeps stacked
``A[slots, R_max, in]`` and ``B[slots, out, R_max]`` (scale folded in) plus each slot's real rank.
Its update lands in its own column window of the fused output, so the base matmul stays one matmul.
All buffers are allocated once; writing an adapter into a slot copies its tensors in place.
"""

from __future__ import annotations

import torch

from loomlm.adapters.peft_loader import LoRAAdapter
from loomlm.adapters.spec import PACKED_GROUPS, LoRABaseSpec
from loomlm.kernels import LoRAKernelMeta, LoRARanks, lora_expand, lora_shrink


class PackedLoRA:
    """One fused linear layer of one decoder layer: its packed modules' stacked A/B and slot ranks.

    On CUDA each module keeps ``A[S, R, in]`` / ``B[S, out, R]`` for the shrink/expand kernels. On
    the CPU the modules' A rows are concatenated per slot (``A_cat^T[S, in, k*R]``, module m at
    columns ``[c_m, c_m + r_m)`` of its slot) and B is kept transposed (``B^T[S, R, out]``): one
    matmul shrinks x for all packed modules and one addmm per module expands into its window, each
    at the adapter's real ranks, so the op count per layer is small and fixed per active adapter."""

    def __init__(
        self,
        modules: tuple[str, ...],
        spec: LoRABaseSpec,
        num_slots: int,
        max_rank: int,
        dtype: torch.dtype,
        device: torch.device,
        use_kernels: bool,
    ) -> None:
        self.modules = modules
        self.use_kernels = use_kernels
        self.offsets: list[int] = []
        self.widths = [spec.module_dims[m][1] for m in modules]
        in_features = spec.module_dims[modules[0]][0]
        self.a: list[torch.Tensor] = []  # kernel layout [S, R, in], CUDA only
        self.b: list[torch.Tensor] = []  # [S, out, R] (kernel) or [S, R, out] (CPU)
        self.ranks: list[LoRARanks] = []
        offset = 0
        for width in self.widths:
            self.offsets.append(offset)
            offset += width
            b_shape = (num_slots, width, max_rank) if self.use_kernels else (num_slots, max_rank, width)
            self.b.append(torch.zeros(b_shape, dtype=dtype, device=device))
            if self.use_kernels:
                self.a.append(torch.zeros(num_slots, max_rank, in_features, dtype=dtype, device=device))
            self.ranks.append(
                LoRARanks(torch.zeros(num_slots, dtype=torch.int32, device=device), [0] * num_slots)
            )
        if not self.use_kernels:
            self.a_cat_t = torch.zeros(
                num_slots, in_features, len(modules) * max_rank, dtype=dtype, device=device
            )
        # How many slots hold weights for each module: a module no slot targets is skipped.
        self._num_targeting = [0] * len(modules)
        # CPU path, per slot: its total rank and (module index, A_cat column, rank) of each module.
        self._slot_rank = [0] * num_slots
        self._slot_parts: list[list[tuple[int, int, int]]] = [[] for _ in range(num_slots)]

    def write(self, slot: int, weights: list[tuple[torch.Tensor, torch.Tensor] | None]) -> None:
        """Set ``slot`` to per-module ``(A [r, in], B [out, r])`` (None: the module is not targeted)."""
        column = 0
        parts: list[tuple[int, int, int]] = []
        if not self.use_kernels:
            self.a_cat_t[slot].zero_()
        for index, pair in enumerate(weights):
            ranks = self.ranks[index]
            rank = 0 if pair is None else pair[0].shape[0]
            self._num_targeting[index] += (rank > 0) - (ranks.host[slot] > 0)
            ranks.host[slot] = rank
            ranks.device[slot] = rank
            self.b[index][slot].zero_()
            if self.use_kernels:
                self.a[index][slot].zero_()
            if pair is None:
                continue
            a, b = pair
            if self.use_kernels:
                self.a[index][slot, :rank].copy_(a)
                self.b[index][slot, :, :rank].copy_(b)
            else:
                self.a_cat_t[slot, :, column : column + rank].copy_(a.t())
                self.b[index][slot, :rank].copy_(b.t())
            if rank:
                parts.append((index, column, rank))
            column += rank
        self._slot_rank[slot] = column
        self._slot_parts[slot] = parts

    def apply(self, x: torch.Tensor, out: torch.Tensor, step: LoRAStep) -> None:
        """``out[t, window of module m] += x[t] @ A_m[slot(t)].T @ B_m[slot(t)].T`` for adapter tokens."""
        if self.use_kernels:
            y = step.weights.scratch[: x.shape[0]]
            for index, offset in enumerate(self.offsets):
                if self._num_targeting[index]:
                    ranks = self.ranks[index]
                    lora_shrink(x, self.a[index], y, step.meta, ranks)
                    lora_expand(y, self.b[index], out, step.meta, ranks, out_offset=offset)
            return
        for slot, rows, ids in step.groups:
            total = self._slot_rank[slot]
            if not total:
                continue
            xs = x[rows] if ids is None else x.index_select(0, ids)
            y = torch.mm(xs, self.a_cat_t[slot, :, :total])
            for index, column, rank in self._slot_parts[slot]:
                offset = self.offsets[index]
                window = out[:, offset : offset + self.widths[index]]
                y_m, b_t = y[:, column : column + rank], self.b[index][slot, :rank]
                if ids is None:
                    window[rows].addmm_(y_m, b_t)
                else:
                    window.index_add_(0, ids, torch.mm(y_m, b_t))


class LoRAModelWeights:
    """Every layer's `PackedLoRA` and one shrink scratch buffer, sized once for the engine."""

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
    ) -> None:
        """``use_kernels``: the shrink/expand kernel layout and calls (default: off the CPU only)."""
        self.spec = spec
        self.num_slots = num_slots
        self.max_rank = max_rank
        device = torch.device(device)
        use_kernels = device.type != "cpu" if use_kernels is None else use_kernels
        self.layers = [
            {
                group: PackedLoRA(modules, spec, num_slots, max_rank, dtype, device, use_kernels)
                for group, modules in PACKED_GROUPS.items()
            }
            for _ in range(spec.num_layers)
        ]
        self.scratch = torch.zeros(max_num_tokens, max_rank, dtype=dtype, device=device)

    def write_slot(self, slot: int, adapter: LoRAAdapter) -> None:
        """Copy ``adapter`` into ``slot`` (every module it does not target gets rank 0)."""
        if not 0 <= slot < self.num_slots:
            raise ValueError(f"slot {slot} is outside [0, {self.num_slots})")
        if adapter.max_rank > self.max_rank:
            raise ValueError(f"adapter {adapter.name!r} has rank {adapter.max_rank} > {self.max_rank}")
        for layer, groups in enumerate(self.layers):
            for packed in groups.values():
                packed.write(slot, [adapter.weights.get((layer, module)) for module in packed.modules])

    def clear_slot(self, slot: int) -> None:
        for groups in self.layers:
            for packed in groups.values():
                packed.write(slot, [None] * len(packed.modules))

    def step(self, meta: LoRAKernelMeta) -> LoRAStep:
        return LoRAStep(self, meta)


class LoRAStep:
    """One step's LoRA: the weights and this step's token grouping. The model's fused linear layers
    call ``apply`` after their base matmul; a step without adapter tokens gets no LoRAStep at all.
    ``groups`` (CPU path) lists each active slot's rows once for all layers: a slice when its tokens
    are one contiguous run (no gather/scatter), else their indices."""

    __slots__ = ("groups", "meta", "weights")

    def __init__(self, weights: LoRAModelWeights, meta: LoRAKernelMeta) -> None:
        self.weights = weights
        self.meta = meta
        self.groups: list[tuple[int, slice, torch.Tensor | None]] = []
        starts = meta.slot_starts_host
        for i, slot in enumerate(meta.active_slots_host):
            row, count = meta.group_row_starts_host[i], starts[i + 1] - starts[i]
            if row >= 0:
                self.groups.append((slot, slice(row, row + count), None))
            else:
                self.groups.append((slot, slice(0, 0), meta.sorted_token_ids[starts[i] : starts[i + 1]]))

    def apply(self, layer: int, group: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Add the LoRA update of fused layer ``group`` of decoder layer ``layer`` into ``out``."""
        self.weights.layers[layer][group].apply(x, out, self)
        return out
