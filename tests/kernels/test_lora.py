"""Multi-LoRA shrink/expand: each token gets its own slot's update at that slot's rank, nothing else moves.

The per-token Python loop is the oracle for the reference; the reference is the oracle for Triton.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from loomlm.adapters.metadata import LoRABatchMetadataBuilder
from loomlm.kernels import (
    LoRARanks,
    lora_expand,
    lora_expand_ref,
    lora_expand_triton,
    lora_shrink,
    lora_shrink_ref,
    lora_shrink_triton,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 set before triton is imported",
)
SHRINK = {"ref": lora_shrink_ref, "triton": lora_shrink_triton}
EXPAND = {"ref": lora_expand_ref, "triton": lora_expand_triton}
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


def make_meta(slots: list[int], max_loras: int):
    builder = LoRABatchMetadataBuilder(max(len(slots), 1), max_loras, device=DEVICE)
    return builder.build(np.asarray(slots, dtype=np.int32))


def make_ranks(ranks: list[int]) -> LoRARanks:
    return LoRARanks(device=torch.tensor(ranks, dtype=torch.int32, device=DEVICE), host=list(ranks))


def make_weights(num_slots, max_rank, in_features, out_features, dtype, seed):
    """A [S, R, in] and B [S, out, R] with unit-variance products."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(num_slots, max_rank, in_features, generator=gen) / in_features**0.5
    b = torch.randn(num_slots, out_features, max_rank, generator=gen) / max_rank**0.5
    return a.to(DEVICE, dtype), b.to(DEVICE, dtype)


def poison(a, b, ranks):
    """NaN past each slot's rank: a path that reads those entries (even times zero) fails."""
    for slot, rank in enumerate(ranks):
        a[slot, rank:] = float("nan")
        b[slot, :, rank:] = float("nan")


def naive(x, a, b, slots, ranks):
    """Per-token loop in fp32: delta[t] = x[t] @ A[s, :r].T @ B[s, :, :r].T (zero for slot -1)."""
    delta = torch.zeros(x.shape[0], b.shape[1], dtype=torch.float32, device=x.device)
    for t, slot in enumerate(slots):
        if slot >= 0:
            r = ranks[slot]
            delta[t] = x[t].float() @ a[slot, :r].float().T @ b[slot, :, :r].float().T
    return delta


def run_lora(impl, x, a, b, out, meta, ranks):
    shrunk = torch.full((x.shape[0], a.shape[1]), 5.0, dtype=x.dtype, device=x.device)
    SHRINK[impl](x, a, shrunk, meta, ranks)
    EXPAND[impl](shrunk, b, out, meta, ranks)
    return shrunk


MIXED_33 = [2, 0, -1, 2, 1, 0, 0, 2, -1, 1, 2, 0, 1] * 2 + [0, 0, 2, 1, -1, 1, 1]  # interleaved, unsorted
CASES = [
    # (slots of each token, ranks per slot, in, out, max rank, dtype)
    ([0], [8], 64, 96, 8, torch.float32),
    ([1, -1, 0, 1, 1, -1, 0], [16, 8], 96, 64, 16, torch.float32),
    (MIXED_33, [8, 64, 0], 128, 128, 64, torch.float32),
    ([-1, 3, 3, 3, -1, 3, 3], [8, 8, 8, 16], 64, 64, 16, torch.float32),  # one slot active of four
    ([0, 1] * 5, [8, 80], 64, 32, 80, torch.float32),  # two column blocks in shrink, one past rank 8
    ([1] * 70 + [0, -1], [8, 16], 64, 32, 16, torch.float32),  # a group spanning two row blocks
    ([1, 0, 2, -1, 0, 1, 1], [8, 16, 4], 64, 96, 16, torch.float16),
    (MIXED_33, [8, 64, 16], 128, 96, 64, torch.bfloat16),
]


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_per_token_loop(case):
    slots, ranks, in_f, out_f, max_rank, dtype = case
    a, b = make_weights(len(ranks), max_rank, in_f, out_f, dtype, seed=len(slots))
    poison(a, b, ranks)
    x = torch.randn(len(slots), in_f, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    out = torch.randn(len(slots), out_f, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    before = out.clone()
    shrunk = run_lora("ref", x, a, b, out, make_meta(slots, len(ranks)), make_ranks(ranks))

    tol = TOL[dtype]
    want = before.float() + naive(x, a, b, slots, ranks)
    torch.testing.assert_close(out.float(), want, atol=tol, rtol=tol)
    no_adapter = [t for t, s in enumerate(slots) if s < 0]
    assert torch.equal(out[no_adapter], before[no_adapter])
    assert bool((shrunk[no_adapter] == 5.0).all())  # shrink leaves no-adapter rows alone too
    for t, slot in enumerate(slots):  # and zeroes each adapter token's columns past its rank
        if slot >= 0:
            assert bool((shrunk[t, ranks[slot] :] == 0).all())


@needs_triton
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference(case):
    slots, ranks, in_f, out_f, max_rank, dtype = case
    a, b = make_weights(len(ranks), max_rank, in_f, out_f, dtype, seed=len(slots))
    poison(a, b, ranks)
    x = torch.randn(len(slots), in_f, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    out = torch.randn(len(slots), out_f, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype)
    meta, lora_ranks = make_meta(slots, len(ranks)), make_ranks(ranks)
    want = out.clone()
    want_shrunk = run_lora("ref", x, a, b, want, meta, lora_ranks)
    got_shrunk = run_lora("triton", x, a, b, out, meta, lora_ranks)

    tol = TOL[dtype]
    torch.testing.assert_close(got_shrunk.float(), want_shrunk.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(out.float(), want.float(), atol=tol, rtol=tol)
    no_adapter = [t for t, s in enumerate(slots) if s < 0]
    assert torch.equal(out[no_adapter], want[no_adapter])


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
def test_packed_shrink_then_strided_expands(impl):
    """q/k/v: one shrink over three A's stacked along R (num_slices=3, each slice at the slot's rank),
    then each R-wide column slice expands into its own column window of a wider output whose other
    columns must not move."""
    # R=32: the 96 packed columns span two column blocks, the second starting inside slice 2.
    slots, ranks, rank_max, in_f, widths = [1, -1, 0, 1, 0, 0, 1], [8, 32], 32, 64, [32, 16, 16]
    gen = torch.Generator().manual_seed(3)
    parts = [make_weights(2, rank_max, in_f, w, torch.float32, seed=i) for i, w in enumerate(widths)]
    for a_part, b_part in parts:
        poison(a_part, b_part, ranks)
    packed_a = torch.cat([a_part for a_part, _ in parts], dim=1)  # [S, 3R, in]
    x = torch.randn(len(slots), in_f, generator=gen).to(DEVICE)
    out = torch.randn(len(slots), sum(widths) + 8, generator=gen).to(DEVICE)
    before = out.clone()
    meta, lora_ranks = make_meta(slots, 2), make_ranks(ranks)
    shrunk = torch.full((len(slots), 3 * rank_max + 4), 5.0, device=DEVICE)  # wider than 3R: a view
    SHRINK[impl](x, packed_a, shrunk[:, : 3 * rank_max], meta, lora_ranks, num_slices=3)
    assert bool((shrunk[:, 3 * rank_max :] == 5.0).all())
    # Each slice holds the slot's rank of live columns, then zeros up to R.
    slices = shrunk[:, : 3 * rank_max].unflatten(1, (3, rank_max))
    assert bool((slices[[2, 4, 5], :, 8:] == 0).all()) and bool((slices[[0, 3, 6], :, 8:] != 0).all())
    offset = 0
    for i, (a_part, b_part) in enumerate(parts):
        y = shrunk[:, i * rank_max : (i + 1) * rank_max]  # strided column view
        EXPAND[impl](y, b_part, out, meta, lora_ranks, out_offset=offset)
        want = before[:, offset : offset + widths[i]] + naive(x, a_part, b_part, slots, ranks)
        torch.testing.assert_close(out[:, offset : offset + widths[i]], want, atol=1e-4, rtol=1e-4)
        offset += widths[i]
    assert torch.equal(out[:, offset:], before[:, offset:])


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
def test_expand_reads_only_the_slot_rank_columns_of_y(impl):
    """y's columns past a slot's rank (stale data in a reused buffer) must not reach the output."""
    slots, ranks = [0, 1, 1, -1, 0], [8, 16]
    _, b = make_weights(2, 16, 16, 48, torch.float32, seed=5)
    poison(torch.zeros(2, 16, 1), b, ranks)
    y = torch.randn(5, 16, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    y[[0, 4], 8:] = float("nan")  # slot 0 has rank 8
    out = torch.zeros(5, 48, device=DEVICE)
    EXPAND[impl](y, b, out, make_meta(slots, 2), make_ranks(ranks))
    want = torch.stack(
        [y[t, : ranks[s]] @ b[s, :, : ranks[s]].T if s >= 0 else out[t] for t, s in enumerate(slots)]
    )
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("slots", [[-1, -1, -1], []])
def test_steps_without_adapter_tokens_touch_nothing(impl, slots):
    a, b = make_weights(2, 8, 64, 32, torch.float32, seed=0)
    x = torch.randn(len(slots), 64, device=DEVICE)
    out = torch.randn(len(slots), 32, device=DEVICE)
    before = out.clone()
    meta = make_meta(slots, 2)
    assert not meta.has_lora
    shrunk = run_lora(impl, x, a, b, out, meta, make_ranks([8, 8]))
    assert torch.equal(out, before) and bool((shrunk == 5.0).all())


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
def test_rank_zero_slot_adds_nothing(impl):
    """A slot whose adapter does not target this module has rank 0: zero shrink, no expand."""
    slots = [0, 1, 0, 1]
    a, b = make_weights(2, 16, 64, 32, torch.float32, seed=0)
    x = torch.randn(4, 64, device=DEVICE)
    out = torch.randn(4, 32, device=DEVICE)
    before = out.clone()
    shrunk = run_lora(impl, x, a, b, out, make_meta(slots, 2), make_ranks([0, 16]))
    assert torch.equal(out[[0, 2]], before[[0, 2]]) and bool((shrunk[[0, 2]] == 0).all())
    assert not torch.equal(out[[1, 3]], before[[1, 3]])


def test_dispatch_matches_per_token_loop():
    slots, ranks = [1, 0, -1, 1], [8, 16]
    a, b = make_weights(2, 16, 64, 32, torch.float32, seed=4)
    x = torch.randn(4, 64, device=DEVICE)
    out = torch.zeros(4, 32, device=DEVICE)
    meta, lora_ranks = make_meta(slots, 2), make_ranks(ranks)
    shrunk = torch.empty(4, 16, device=DEVICE)
    lora_shrink(x, a, shrunk, meta, lora_ranks)
    lora_expand(shrunk, b, out, meta, lora_ranks)
    torch.testing.assert_close(out, naive(x, a, b, slots, ranks), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
def test_rejects_inconsistent_arguments(impl):
    a, b = make_weights(2, 8, 64, 32, torch.float32, seed=0)
    meta, ranks = make_meta([0, 1, 0], 2), make_ranks([8, 8])
    x, y, out = (torch.zeros(3, n, device=DEVICE) for n in (64, 8, 32))
    with pytest.raises(ValueError):  # rows differ from meta.num_tokens
        SHRINK[impl](x[:2], a, y[:2], meta, ranks)
    with pytest.raises(ValueError):  # out narrower than R
        SHRINK[impl](x, a, y[:, :4], meta, ranks)
    with pytest.raises(ValueError):  # out window past the last column
        EXPAND[impl](y, b, out, meta, ranks, out_offset=1)
    with pytest.raises(ValueError):  # ranks for a different number of slots
        EXPAND[impl](y, b, out, meta, make_ranks([8]))
    if impl == "ref":
        with pytest.raises(ValueError):  # a rank larger than the stacked weights hold
            SHRINK[impl](x, a, y, meta, make_ranks([8, 9]))
