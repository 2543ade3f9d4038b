"""CPULoRAScratch: the buffers of the CPU LoRA step's batched path (`cpu_step.py`), allocated once
for the engine's limits, and the size limit of a batched slot."""

from __future__ import annotations

import torch

from loomlm.adapters.cpu_layout import CPULoRAGroup
from loomlm.adapters.cpu_native import native_lora_applies, native_lora_takes_any_count

# Default ``batch_max_tokens``: a slot with more tokens than this in a step runs alone, since its
# matmul is already efficient and padding the other slots of its class up to its count would waste work.
BATCH_MAX_TOKENS = 16
# With the C++ path on and its AVX2 kernels: a slot with at most this many tokens in a step runs there,
# one with more (a prefill chunk) runs torch's matmul per adapter. bench/lora_step.py: a 2048-token
# prefill step in chunks of 256 ran 0.83x torch's speed in AVX2 C++, while decode steps of 64 tokens ran
# 1.5-3.9x faster, and a decode step must run every slot in C++ to stay in the fused decode stack. The
# AVX-512 kernels take every slot (prefill chunks 1.6-1.9x faster than torch's matmul).
NATIVE_MAX_TOKENS = 64


class CPULoRAScratch:
    """Buffers for the batched path, allocated once for the engine's limits."""

    def __init__(
        self,
        groups: dict[str, CPULoRAGroup],
        num_slots: int,
        max_rank: int,
        max_num_tokens: int,
        batch_max_tokens: int = BATCH_MAX_TOKENS,
        native: bool | None = None,
    ):
        """``batch_max_tokens``: the most tokens a slot may have in a step to run batched (0: never).
        ``native``: slots of up to ``native_max_tokens`` in C++ (`cpu_native.py`; default: where it
        applies)."""
        if batch_max_tokens < 0:
            raise ValueError(f"batch_max_tokens must be >= 0 (0 turns batching off), got {batch_max_tokens}")
        self.batch_max_tokens = batch_max_tokens
        max_rows = num_slots * batch_max_tokens  # every batched slot pads to at most this many
        dtype = next(iter(groups.values())).rows.dtype
        if native and not native_lora_applies(dtype):
            raise ValueError("the C++ LoRA path needs loomlm._C and float32 adapter weights")
        self.native = native_lora_applies(dtype) if native is None else native
        self.native_max_tokens = max_num_tokens if native_lora_takes_any_count() else NATIVE_MAX_TOKENS
        max_in = max(g.in_features for g in groups.values())
        max_y = max(len(g.modules) for g in groups.values()) * max_rank
        self.x_gathered = torch.empty(max_rows * max_in, dtype=dtype)
        self.y = torch.empty(max_rows * max_y, dtype=dtype)
        self.weights = torch.empty(num_slots * max(g.rows.shape[2] for g in groups.values()), dtype=dtype)
        # Per fused layer: delta buffers per module and (packed layers) for all, the padded token
        # index, pad rows, class slots.
        self.module_deltas = {
            name: [torch.zeros(max_rows, w, dtype=dtype) for w in g.widths] for name, g in groups.items()
        }
        self.deltas = {
            name: torch.zeros(max_rows, sum(g.widths), dtype=dtype) if len(g.widths) > 1 else deltas[0]
            for (name, g), deltas in zip(groups.items(), self.module_deltas.values(), strict=True)
        }
        self.token_index = {name: torch.zeros(max_rows, dtype=torch.int64) for name in groups}
        self.pad_rows = {name: torch.zeros(max_rows, dtype=torch.int64) for name in groups}
        self.class_slots = {name: torch.zeros(num_slots, dtype=torch.int64) for name in groups}
        # The per-adapter path's update for a slot whose tokens are not one run, before its scatter.
        self.run_deltas = torch.empty(
            max_num_tokens * max(sum(g.widths) for g in groups.values()), dtype=dtype
        )
