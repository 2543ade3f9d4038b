"""LoRA batch metadata: tokens grouped by slot (stably), active slots, starts, reused buffers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loomlm.adapters.metadata import LoRABatchMetadataBuilder


def groups_of(meta) -> dict[int, list[int]]:
    ids = meta.sorted_token_ids.tolist()
    starts = meta.slot_starts.tolist()
    return {slot: ids[starts[i] : starts[i + 1]] for i, slot in enumerate(meta.active_slots.tolist())}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_every_adapter_token_by_slot_in_row_order(seed):
    rng = np.random.default_rng(seed)
    slots = rng.integers(-1, 5, size=40).astype(np.int32)
    meta = LoRABatchMetadataBuilder(64, 5).build(slots)

    present = sorted(set(slots.tolist()) - {-1})
    assert meta.num_tokens == 40
    assert meta.active_slots.tolist() == meta.active_slots_host == present
    assert meta.slot_starts.tolist() == meta.slot_starts_host
    # Stable: each group lists its rows in increasing order; slot -1 rows are in no group.
    assert groups_of(meta) == {s: np.flatnonzero(slots == s).tolist() for s in present}
    assert meta.max_tokens_per_slot == max(int((slots == s).sum()) for s in present)
    assert meta.num_active == len(present) and meta.has_lora
    assert meta.sorted_token_ids.dtype == meta.slot_starts.dtype == meta.active_slots.dtype == torch.int32


def test_contiguous_groups_report_their_first_row():
    slots = np.array([-1, 3, 3, 3, 0, 0, 1, 2, 1], dtype=np.int32)
    meta = LoRABatchMetadataBuilder(16, 4).build(slots)
    assert meta.active_slots_host == [0, 1, 2, 3]
    # Slot 1's rows (6, 8) are not a run; the others are.
    assert meta.group_row_starts_host == [4, -1, 7, 1]


def test_no_adapter_tokens_mean_no_groups():
    builder = LoRABatchMetadataBuilder(8, 2)
    for slots in (np.full(5, -1, dtype=np.int32), np.empty(0, dtype=np.int32)):
        meta = builder.build(slots)
        assert not meta.has_lora and meta.num_active == 0
        assert meta.num_tokens == len(slots) and meta.max_tokens_per_slot == 0
        assert meta.sorted_token_ids.numel() == 0 and meta.slot_starts_host == [0]


def test_buffers_are_reused_across_builds():
    builder = LoRABatchMetadataBuilder(32, 4)
    first = builder.build(np.array([0, 1, 1, 3], dtype=np.int32))
    storage = first.sorted_token_ids.untyped_storage().data_ptr()
    second = builder.build(np.array([2, 2, -1, 0, 0, 0, 1], dtype=np.int32))
    for tensor in (second.sorted_token_ids, second.slot_starts, second.active_slots):
        assert tensor.untyped_storage().data_ptr() == storage
    assert groups_of(second) == {0: [3, 4, 5], 1: [6], 2: [0, 1]}


def test_accepts_exactly_the_preallocated_token_count():
    slots = np.arange(16, dtype=np.int64) % 3
    meta = LoRABatchMetadataBuilder(16, 3).build(slots)
    assert meta.num_tokens == 16 and meta.slot_starts_host == [0, 6, 11, 16]


@pytest.mark.parametrize(
    "slots",
    [
        np.zeros(17, dtype=np.int32),  # more tokens than max_num_batched_tokens
        np.array([0, 4], dtype=np.int32),  # slot >= max_loras
        np.array([0, -2], dtype=np.int32),  # only -1 means "no adapter"
        np.zeros((2, 2), dtype=np.int32),  # not 1-D
        np.array([0.0, 1.0]),  # not integers
    ],
)
def test_rejects_bad_token_slots(slots):
    with pytest.raises(ValueError):
        LoRABatchMetadataBuilder(16, 4).build(slots)


@pytest.mark.parametrize("args", [(0, 4), (16, 0), (16, 40000)])
def test_rejects_bad_sizes(args):
    with pytest.raises(ValueError):
        LoRABatchMetadataBuilder(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_variant_matches_host_grouping():
    slots = np.array([1, -1, 0, 1, 2, 0], dtype=np.int32)
    cpu = LoRABatchMetadataBuilder(8, 3).build(slots)
    builder = LoRABatchMetadataBuilder(8, 3, device="cuda")
    for _ in range(2):  # the second build waits for the first copy before reusing pinned memory
        meta = builder.build(slots)
        assert meta.sorted_token_ids.is_cuda
        assert meta.sorted_token_ids.cpu().tolist() == cpu.sorted_token_ids.tolist()
        assert meta.slot_starts.cpu().tolist() == cpu.slot_starts.tolist()
        assert meta.active_slots.cpu().tolist() == cpu.active_slots.tolist()
