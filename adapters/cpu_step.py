"""One engine step of LoRA on the CPU: plan once per step, apply in every decoder layer.

Cost must follow the adapters in the step and their real ranks. Where loomlm._C is built (float32
weights), slots of up to ``native_max_tokens`` tokens (every slot on AVX-512) run in C++
(`cpu_native.py`: register-tiled kernels; decode steps inside the fused decode stack). Otherwise, two
ways to run a slot's tokens in torch:

* **Batched** (decode-sized groups): slots with at most ``batch_max_tokens`` tokens and the same
  `SlotLayout` form a class (a slot alone in its layout runs per adapter). Per layer, one copy
  gathers the class's weight rows into a scratch buffer, one ``bmm`` shrinks and one ``bmm`` per
  module expands into that module's delta buffer; the deltas are concatenated and one
  ``index_add_`` scatters every class's rows into the fused output. Why: a small matmul streams
  cold weights several times slower than a contiguous copy followed by a matmul on cache-hot data,
  and the op count per layer follows the number of classes, not of adapters. (An ``index_add_``
  into a column window of a wide tensor, or a ``bmm`` writing into one, is several times slower
  than the concatenation plus one full-row scatter.)
* **Per adapter** (prefill-sized groups, and a slot alone in its layout): a matmul on views of the
  slot's row, plus an in-place ``addmm_`` per module at its real rank (slices when the slot's
  tokens are one run).

Padding rows of a batched class read token 0 and are zeroed before the shrink, so they add nothing.
All buffers come from `CPULoRAScratch` (`cpu_scratch.py`), sized once; the plan is views into them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from loomlm.adapters.cpu_layout import CPULoRAGroup, SlotLayout
from loomlm.adapters.cpu_native import NativeLoRAPlan, plan_native
from loomlm.adapters.cpu_scratch import CPULoRAScratch
from loomlm.kernels.lora_types import LoRAKernelMeta


@dataclass(slots=True)
class SingleRun:
    """One slot's tokens on the per-adapter path: a row slice when they are one run, else indices."""

    slot: int
    rows: slice
    ids: torch.Tensor | None


@dataclass(slots=True)
class SlotTokens:
    """One active slot of the step: its token count, where its ids start in the grouped ids, its run."""

    slot: int
    count: int
    ids_start: int
    run: SingleRun


@dataclass(slots=True)
class BatchedClass:
    """Same-layout slots batched into one bmm per layer: views into the scratch buffers."""

    slots: torch.Tensor  # int64 [n]
    row_size: int  # floats of each slot's row to gather
    weights: torch.Tensor  # [n, row_size]: the gathered rows
    x: torch.Tensor  # [n, P, in]: the class's gathered (padded) tokens
    a_t: torch.Tensor  # [n, in, k'c]
    y: torch.Tensor  # [n, P, k'c]
    expands: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]  # (y_j, B_j^T, delta_j)


@dataclass(slots=True)
class BatchedPlan:
    token_index: torch.Tensor  # int64 [N]: source row of each padded row
    pad_rows: torch.Tensor | None  # int64: padded rows to zero after the gather
    x_gathered: torch.Tensor  # [N, in]
    classes: tuple[BatchedClass, ...]
    module_deltas: tuple[torch.Tensor, ...]  # [N, width] per module of the fused layer
    deltas: torch.Tensor  # [N, fused width]: their concatenation (the one buffer for a single module)


@dataclass(slots=True)
class GroupPlan:
    group: CPULoRAGroup
    singles: tuple[SingleRun, ...]
    batched: BatchedPlan | None
    native: NativeLoRAPlan | None = None  # slots of up to native_max_tokens in C++, where it applies


class CPULoRAStep:
    """This step's LoRA on the CPU; the model's fused linear layers call `apply` after their matmul.
    The plan views the scratch buffers: it is valid until the next step is planned."""

    __slots__ = ("plans", "run_deltas")

    def __init__(self, groups: dict[str, CPULoRAGroup], scratch: CPULoRAScratch, meta: LoRAKernelMeta):
        starts = meta.slot_starts_host
        sorted_ids = meta.sorted_token_ids
        slots = []
        for i, slot in enumerate(meta.active_slots_host):
            row, count = meta.group_row_starts_host[i], starts[i + 1] - starts[i]
            if row >= 0:
                run = SingleRun(slot, slice(row, row + count), None)
            else:
                run = SingleRun(slot, slice(0, 0), sorted_ids[starts[i] : starts[i + 1]])
            slots.append(SlotTokens(slot, count, starts[i], run))
        ids_np = sorted_ids.numpy()
        self.run_deltas = scratch.run_deltas
        self.plans = {
            name: _plan_group(name, group, scratch, slots, ids_np, scratch.native)
            for name, group in groups.items()
        }

    @property
    def int8_activations(self) -> bool:
        """Whether the C++ int8 kernels may quantize this step's activations (`CPULoRAGroup`)."""
        return any(plan.group.int8_activations for plan in self.plans.values())

    def all_native(self) -> bool:
        """Whether every slot of the step runs the C++ path (what the fused decode stack can run)."""
        return all(not plan.singles and plan.batched is None for plan in self.plans.values())

    def apply(self, layer: int, group: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Add the LoRA update of fused layer ``group`` of decoder layer ``layer`` into ``out``."""
        plan = self.plans[group]
        views_of = plan.group.views
        for run in plan.singles:
            views = views_of[run.slot][layer]
            if views is None:
                continue
            ids = run.ids
            if ids is None:  # one run of rows: update them in place
                y, target = torch.mm(x[run.rows], views.a_t), out[run.rows]
            else:  # scattered rows: build their full-width update, then one full-row scatter
                y = torch.mm(x.index_select(0, ids), views.a_t)
                target = self.run_deltas[: ids.shape[0] * out.shape[1]].view(ids.shape[0], out.shape[1])
                target.zero_()
            for part in views.parts:
                y_m = y[:, part.y_column : part.y_column + part.rank]
                target[:, part.out_offset : part.out_offset + part.width].addmm_(y_m, part.b_t)
            if ids is not None:
                out.index_add_(0, ids, target)
        if plan.native is not None:
            plan.native.apply(x, out, *plan.group.native_layer(layer), plan.group.int8_activations)
        batched = plan.batched
        if batched is not None:
            torch.index_select(x, 0, batched.token_index, out=batched.x_gathered)
            if batched.pad_rows is not None:
                batched.x_gathered.index_fill_(0, batched.pad_rows, 0)
            rows = plan.group.rows[layer]
            for cls in batched.classes:
                torch.index_select(rows[:, : cls.row_size], 0, cls.slots, out=cls.weights)
                torch.bmm(cls.x, cls.a_t, out=cls.y)
                for y_j, b_j, delta_j in cls.expands:
                    torch.bmm(y_j, b_j, out=delta_j)
            if len(batched.module_deltas) > 1:
                torch.cat(batched.module_deltas, dim=1, out=batched.deltas)
            out.index_add_(0, batched.token_index, batched.deltas)
        return out


def _plan_group(
    name: str,
    group: CPULoRAGroup,
    scratch: CPULoRAScratch,
    slots: list[SlotTokens],
    ids_np: np.ndarray,
    native: bool,
) -> GroupPlan:
    """Split the step's slots into per-adapter runs and batched same-layout classes for one fused layer
    (``native``: slots of up to ``native_max_tokens`` run in C++ instead of batched classes)."""
    singles: list[SingleRun] = []
    by_layout: dict[SlotLayout, list[SlotTokens]] = {}
    native_members: list[tuple[int, int, int]] = []
    for tokens in slots:
        layout = group.layouts[tokens.slot]
        if not layout.rank:
            continue
        if native and tokens.count <= scratch.native_max_tokens:
            native_members.append((tokens.slot, tokens.count, tokens.ids_start))
        elif tokens.count <= scratch.batch_max_tokens:
            by_layout.setdefault(layout, []).append(tokens)
        else:
            singles.append(tokens.run)
    classes = []
    for layout, members in by_layout.items():
        if len(members) > 1:
            classes.append((layout, members))
        else:  # gathering one slot's weights costs a copy and batches nothing
            singles.append(members[0].run)
    batched = _plan_batched(name, group, scratch, classes, ids_np) if classes else None
    native_plan = plan_native(group, native_members, ids_np) if native_members else None
    return GroupPlan(group, tuple(singles), batched, native_plan)


def _plan_batched(
    name: str,
    group: CPULoRAGroup,
    scratch: CPULoRAScratch,
    classes: list[tuple[SlotLayout, list[SlotTokens]]],
    ids_np: np.ndarray,
) -> BatchedPlan:
    """Lay the classes out in the scratch buffers: class after class, each slot padded to the class's
    largest token count."""
    token_index, pad_rows = scratch.token_index[name], scratch.pad_rows[name]
    index_np, pad_np, slots_np = token_index.numpy(), pad_rows.numpy(), scratch.class_slots[name].numpy()
    num_rows = sum(len(members) * max(t.count for t in members) for _, members in classes)
    x_gathered = scratch.x_gathered[: num_rows * group.in_features].view(num_rows, group.in_features)
    module_deltas = [d[:num_rows] for d in scratch.module_deltas[name]]
    planned, row, num_pad, num_slots = [], 0, 0, 0
    for layout, members in classes:
        n, width = len(members), max(t.count for t in members)
        for j, tokens in enumerate(members):
            start, count = row + j * width, tokens.count
            index_np[start : start + count] = ids_np[tokens.ids_start : tokens.ids_start + count]
            index_np[start + count : start + width] = 0
            pad_np[num_pad : num_pad + width - count] = np.arange(start + count, start + width)
            num_pad += width - count
            slots_np[num_slots + j] = tokens.slot
        end = row + n * width
        c, k = layout.rank, len(layout.modules)
        size, a_size = group.row_size(layout), group.a_t_size(layout)
        weights = scratch.weights[: n * size].view(n, size)
        y = scratch.y[: n * width * k * c].view(n, width, k * c)
        expands, position = [], a_size
        for j, m in enumerate(layout.modules):
            w = group.widths[m]
            b_t = weights[:, position : position + c * w].view(n, c, w)
            position += c * w
            expands.append((y[:, :, j * c : (j + 1) * c], b_t, module_deltas[m][row:end].view(n, width, w)))
        for m in set(range(len(group.modules))) - set(layout.modules):
            module_deltas[m][row:end].zero_()  # this class adds nothing to module m: no layer writes it
        planned.append(
            BatchedClass(
                slots=scratch.class_slots[name][num_slots : num_slots + n],
                row_size=size,
                weights=weights,
                x=x_gathered[row:end].view(n, width, group.in_features),
                a_t=weights[:, :a_size].view(n, group.in_features, k * c),
                y=y,
                expands=tuple(expands),
            )
        )
        row, num_slots = end, num_slots + n
    return BatchedPlan(
        token_index=token_index[:num_rows],
        pad_rows=pad_rows[:num_pad] if num_pad else None,
        x_gathered=x_gathered,
        classes=tuple(planned),
        module_deltas=tuple(module_deltas),
        deltas=scratch.deltas[name][:num_rows],
    )
