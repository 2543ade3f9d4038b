"""The CPU LoRA path in C++ (`loomlm._C.lora_slots_apply`): each active slot's row (`cpu_layout.py`,
or its int8 copy, `cpu_int8.py`) is read once per layer where it lives, and its tokens' updates are
added straight into the fused output. The torch path (`cpu_step.py`) first copies the rows of
same-layout slots into a scratch buffer, pads every slot of a class to its largest token count and
runs ``bmm``s; with many distinct adapters that copy and the op count dominated a decode step. The
kernels tile tokens x columns in registers; slots of up to ``NATIVE_MAX_TOKENS`` run here
(`cpu_scratch.py`), so a decode step with one adapter and 64 sequences stays in C++ too, and on a CPU
with the AVX-512 kernels every slot, prefill chunks included. The plan
is built once per step and fused layer, and serves every decoder layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from loomlm.adapters.cpu_layout import CPULoRAGroup
from loomlm.kernels.native import _C


def native_lora_applies(dtype: torch.dtype) -> bool:
    return _C is not None and dtype == torch.float32


def native_lora_takes_any_count() -> bool:
    """Whether the C++ kernels also beat torch's matmul on prefill-sized slots: the AVX-512 ones do."""
    return _C is not None and _C.kernel_isa() == "avx512_vnni"


@dataclass(slots=True)
class NativeLoRAPlan:
    token_ids: torch.Tensor  # int64 [N]: the tokens of each slot group, group after group
    starts: torch.Tensor  # int64 [G + 1]
    info: torch.Tensor  # int64 [G, 3 + 2 * modules]: slot, rank, module count, (out offset, width)...

    def apply(
        self,
        x: torch.Tensor,
        out: torch.Tensor,
        rows: torch.Tensor,
        scales: torch.Tensor | None,
        int8_activations: bool = False,
    ) -> None:
        """Add the groups' updates into ``out`` in place; ``rows`` (and ``scales``, for int8 rows): this
        decoder layer's slot rows (`CPULoRAGroup.native_layer`); ``int8_activations``: the group's."""
        _C.lora_slots_apply(
            x, out, rows, self.token_ids, self.starts, self.info, scales, int8_activations=int8_activations
        )


def plan_native(group: CPULoRAGroup, members: list[tuple[int, int, int]], ids: np.ndarray) -> NativeLoRAPlan:
    """``members``: (slot, count, start of its tokens in ``ids``) of each active slot."""
    fields = 3 + 2 * len(group.modules)
    info = np.zeros((len(members), fields), dtype=np.int64)
    starts = np.zeros(len(members) + 1, dtype=np.int64)
    token_ids = []
    for g, (slot, count, start) in enumerate(members):
        layout = group.layouts[slot]
        info[g, :3] = (slot, layout.rank, len(layout.modules))
        for j, m in enumerate(layout.modules):
            info[g, 3 + 2 * j : 5 + 2 * j] = (group.offsets[m], group.widths[m])
        starts[g + 1] = starts[g] + count
        token_ids.append(ids[start : start + count])
    return NativeLoRAPlan(
        torch.from_numpy(np.concatenate(token_ids).astype(np.int64)),
        torch.from_numpy(starts),
        torch.from_numpy(info),
    )
