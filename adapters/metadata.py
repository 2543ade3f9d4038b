"""Per-step LoRA batch metadata: group the step's tokens by adapter slot for the shrink/expand kernels.

`LoRABatchMetadataBuilder` owns buffers sized once (max_num_batched_tokens, max_loras) and turns the
token -> slot map of a step into a `LoRAKernelMeta` with numpy only (no per-token Python). The
grouping is a stable counting sort: numpy's stable argsort on 16-bit keys is a radix sort.
"""

from __future__ import annotations

import numpy as np
import torch

from loomlm.kernels.lora_types import LoRAKernelMeta

# Keys must fit int16 for numpy's O(n) radix sort; slot -1 maps to max_loras (sorted last, dropped).
_MAX_LORAS_LIMIT = np.iinfo(np.int16).max


class LoRABatchMetadataBuilder:
    """Builds each step's `LoRAKernelMeta` into preallocated buffers.

    The returned meta views the builder's buffers: it is valid until the next `build`. On CUDA the
    grouped index goes to the device in ONE non-blocking copy from pinned memory; before overwriting
    that pinned memory, the next build waits for the previous copy (an event, normally long done).
    """

    def __init__(self, max_num_batched_tokens: int, max_loras: int, device: torch.device | str = "cpu"):
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {max_num_batched_tokens}")
        if not 1 <= max_loras <= _MAX_LORAS_LIMIT:
            raise ValueError(f"max_loras must be in [1, {_MAX_LORAS_LIMIT}], got {max_loras}")
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_loras = max_loras
        self.device = torch.device(device)
        # One packed int32 buffer per side: [sorted ids (n) | starts (a + 1) | active slots (a)].
        size = max_num_batched_tokens + 2 * max_loras + 1
        on_cuda = self.device.type == "cuda"
        self._host = torch.empty(size, dtype=torch.int32, pin_memory=on_cuda)
        self._host_np = self._host.numpy()
        self._device = torch.empty(size, dtype=torch.int32, device=self.device) if on_cuda else self._host
        self._copy_done = torch.cuda.Event() if on_cuda else None
        self._keys = np.empty(max_num_batched_tokens, dtype=np.int16)

    def build(self, token_slots: np.ndarray) -> LoRAKernelMeta:
        """Group `token_slots` (int [num_tokens], -1 = no adapter) by slot, stably."""
        slots = np.asarray(token_slots)
        if slots.ndim != 1:
            raise ValueError(f"token_slots must be 1-D [num_tokens], got shape {slots.shape}")
        if slots.size and not np.issubdtype(slots.dtype, np.integer):
            raise ValueError(f"token_slots must hold integers, got dtype {slots.dtype}")
        num_tokens = slots.shape[0]
        if num_tokens > self.max_num_batched_tokens:
            raise ValueError(
                f"{num_tokens} tokens exceed max_num_batched_tokens={self.max_num_batched_tokens} "
                "the builder was sized for"
            )
        if num_tokens and (slots.min() < -1 or slots.max() >= self.max_loras):
            raise ValueError(
                f"token slots must be in [-1, {self.max_loras}) (max_loras), got {slots.min()}..{slots.max()}"
            )
        keys = self._keys[:num_tokens]
        np.copyto(keys, slots, casting="unsafe")
        keys[keys < 0] = self.max_loras
        counts = np.bincount(keys, minlength=self.max_loras + 1)[: self.max_loras]
        active = np.flatnonzero(counts)
        num_active = active.shape[0]
        group_counts = counts[active]
        num_lora_tokens = int(group_counts.sum())

        if self._copy_done is not None:
            self._copy_done.synchronize()  # the previous step's H2D copy still reads the pinned buffer
        buf = self._host_np
        ids = buf[:num_lora_tokens]
        ids[:] = np.argsort(keys, kind="stable")[:num_lora_tokens]
        starts = buf[num_lora_tokens : num_lora_tokens + num_active + 1]
        starts[0] = 0
        np.cumsum(group_counts, out=starts[1:])
        buf[num_lora_tokens + num_active + 1 : num_lora_tokens + 2 * num_active + 1] = active

        used = num_lora_tokens + 2 * num_active + 1
        if self._copy_done is not None:
            self._device[:used].copy_(self._host[:used], non_blocking=True)
            self._copy_done.record()
        dev = self._device
        starts_host = starts.tolist()
        # A group is a contiguous row run when its (increasing) rows span exactly its count.
        firsts = ids[starts[:-1]] if num_lora_tokens else np.empty(0, dtype=np.int32)
        lasts = ids[starts[1:] - 1] if num_lora_tokens else np.empty(0, dtype=np.int32)
        row_starts = np.where(lasts - firsts + 1 == group_counts, firsts, -1)
        return LoRAKernelMeta(
            num_tokens=num_tokens,
            sorted_token_ids=dev[:num_lora_tokens],
            slot_starts=dev[num_lora_tokens : num_lora_tokens + num_active + 1],
            active_slots=dev[num_lora_tokens + num_active + 1 : used],
            max_tokens_per_slot=int(group_counts.max()) if num_active else 0,
            active_slots_host=active.tolist(),
            slot_starts_host=starts_host,
            group_row_starts_host=row_starts.tolist(),
        )
