"""loomlm._C.lora_slots_apply: LoRA slot groups in C++, float32 rows and packed int8 rows, portable,
AVX2 and AVX-512 kernels (few tokens and many, every tile shape's tail), against the same update
computed with torch matmuls; and bad plans raise before any write."""

import pytest
import torch

from loomlm.adapters.cpu_int8 import Int8LoRARows, round_to_int8
from loomlm.kernels.native import _C

pytestmark = pytest.mark.skipif(_C is None, reason="loomlm._C is not built")

# Widths not multiples of 16, an odd rank; rank 64 x 3 modules fills the AVX-512 kernel's widest tile.
IN, WIDTHS, RANKS = 70, (40, 24, 24), (8, 5, 16, 64)
OFFSETS = (0, 40, 64)


def make_slots(seed=0):
    """Per slot: a_t [IN, 3*rank] and b_t [rank, w] per module, as float32 rows and as the int8 copy.
    The int8 copy rounds the float32 rows in place, so ``rows_int8`` holds exactly what it packs."""
    g = torch.Generator().manual_seed(seed)
    capacity = max(r * (IN * len(WIDTHS) + sum(WIDTHS)) for r in RANKS)
    rows, rows_int8 = torch.zeros(len(RANKS), capacity), torch.zeros(len(RANKS), capacity)
    copy = Int8LoRARows(1, len(RANKS), IN, WIDTHS, max(RANKS))
    weights = []
    for slot, r in enumerate(RANKS):
        a_t = torch.randn(IN, len(WIDTHS) * r, generator=g)
        b_ts = [torch.randn(r, w, generator=g) / 4 for w in WIDTHS]
        flat = torch.cat([a_t.flatten(), *(b.flatten() for b in b_ts)])
        rows[slot, : flat.numel()] = flat
        rows_int8[slot, : flat.numel()] = flat
        views, position = [], IN * len(WIDTHS) * r
        for w in WIDTHS:
            views.append(rows_int8[slot, position : position + r * w].view(r, w))
            position += r * w
        copy.write(0, slot, rows_int8[slot, : IN * len(WIDTHS) * r].view(IN, -1), views)
        weights.append((a_t, b_ts))
    return rows, rows_int8, copy, weights


def plan(groups):
    """``groups``: (slot, token ids) pairs -> (token_ids, starts, info) for lora_slots_apply."""
    windows = [v for pair in zip(OFFSETS, WIDTHS, strict=True) for v in pair]
    info = [[slot, RANKS[slot], len(WIDTHS), *windows] for slot, _ in groups]
    starts = [0]
    for _, ids in groups:
        starts.append(starts[-1] + len(ids))
    token_ids = torch.tensor([t for _, ids in groups for t in ids], dtype=torch.int64)
    return token_ids, torch.tensor(starts, dtype=torch.int64), torch.tensor(info, dtype=torch.int64)


def reference(x, out, rows, groups):
    """The same update from the float32 rows, with torch matmuls."""
    expected = out.clone()
    for slot, ids in groups:
        r, k = RANKS[slot], len(WIDTHS)
        a_t = rows[slot, : IN * k * r].view(IN, k * r)
        y = x[ids] @ a_t
        position = IN * k * r
        for m, (offset, w) in enumerate(zip(OFFSETS, WIDTHS, strict=True)):
            b_t = rows[slot, position : position + r * w].view(r, w)
            position += r * w
            expected[ids, offset : offset + w] += y[:, m * r : (m + 1) * r] @ b_t
    return expected


def quantized(v):
    """Each row of ``v`` as the VNNI kernel quantizes activations: integers q and scale d, v ~ q * d."""
    d = v.abs().amax(1, keepdim=True) / 127
    inverse = torch.where(d != 0, 1 / d, torch.zeros_like(d))
    return torch.round(v * inverse).double(), d


def reference_vnni(x, out, weights, scales, groups):
    """The VNNI kernel's update, operation for operation: x and each module's slice of y quantized per
    token, exact integer sums of the int8 weights, then the same float32 scalings and adds."""
    expected = out.clone()
    for slot, ids in groups:
        a_t, b_ts = weights[slot]
        r, k = RANKS[slot], len(WIDTHS)
        q_a, _ = round_to_int8(a_t, dim=0)
        xq, dx = quantized(x[ids])
        y = ((xq @ q_a.double()).float() * dx) * scales[slot, : k * r]
        for m, (offset, b_t) in enumerate(zip(OFFSETS, b_ts, strict=True)):
            q_b, _ = round_to_int8(b_t, dim=1)
            yq, dy = quantized(y[:, m * r : (m + 1) * r])
            expected[ids, offset : offset + b_t.shape[1]] += (yq @ q_b.double()).float() * dy
    return expected


GROUPS = {
    "ragged": [(0, [0, 5, 7]), (1, [1, 2, 3, 4, 6, 8, 9, 10, 11]), (2, [12])],
    "one adapter, every token": [(2, list(range(23)))],  # cut into runs of tokens across threads
    "tile tails": [(0, [0, 1, 2, 3, 4, 5]), (1, [6, 7]), (2, [8, 9, 10, 11, 12, 13, 14])],
    "widest rows": [(3, [0, 2, 3, 4, 5]), (1, [1]), (3, list(range(6, 23)))],
}
# "int8a8": int8 rows with int8_activations, which only the VNNI kernels take up (the others stay exact).
KINDS = [
    f"{dtype} {isa}" for dtype in ("float32", "int8", "int8a8") for isa in ("scalar", "avx2", "avx512_vnni")
]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("groups", GROUPS.values(), ids=GROUPS.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_update_matches_torch_matmuls(kind, groups, threads):
    dtype, isa = kind.split()
    if isa not in _C.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    rows, rows_int8, copy, weights = make_slots()
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(23, IN, generator=g), torch.randn(23, sum(WIDTHS), generator=g)
    token_ids, starts, info = plan(groups)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = out.clone()
        if dtype == "float32":
            _C.lora_slots_apply(x, got, rows, token_ids, starts, info, None, isa)
            expected = reference(x, out, rows, groups)
        else:
            int8_activations = dtype == "int8a8"
            _C.lora_slots_apply(
                x, got, copy.packed[0], token_ids, starts, info, copy.scales[0], isa, int8_activations
            )
            if int8_activations and isa == "avx512_vnni":  # compare with that computation exactly
                expected = reference_vnni(x, out, weights, copy.scales[0], groups)
            else:
                expected = reference(x, out, rows_int8, groups)
    finally:
        torch.set_num_threads(previous)
    tol = 1e-5 if kind == "int8a8 avx512_vnni" else 1e-4  # the VNNI sums are exact: only float roundings
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    untouched = sorted(set(range(23)) - {t for _, ids in groups for t in ids})
    assert torch.equal(got[untouched], out[untouched])


def test_int8_rows_are_the_float_rows_rounded_per_rank_component():
    rows, rows_int8, copy, weights = make_slots()
    for slot, (a_t, b_ts) in enumerate(weights):
        r = RANKS[slot]
        a_int8 = rows_int8[slot, : IN * 3 * r].view(IN, 3 * r)
        # Each column of A^T (a row of A) has 255 levels at most, spaced by its own scale.
        scale = a_t.abs().amax(0) / 127
        torch.testing.assert_close(a_int8, torch.round(a_t / scale) * scale)
        assert (a_int8 - a_t).abs().max() <= scale.max() / 2 + 1e-6
        assert not torch.equal(a_int8, a_t)
        assert torch.equal(copy.scales[0, slot, 3 * r :], torch.zeros_like(copy.scales[0, slot, 3 * r :]))
        position = IN * 3 * r  # each row of B^T (a column of B) has its own scale
        for b_t, w in zip(b_ts, WIDTHS, strict=True):
            b_int8 = rows_int8[slot, position : position + r * w].view(r, w)
            scale = b_t.abs().amax(1, keepdim=True) / 127
            torch.testing.assert_close(b_int8, torch.round(b_t / scale) * scale)
            position += r * w
        # The float32 rows the int8 copy did not touch are the weights as given.
        assert torch.equal(rows[slot, : IN * 3 * r].view(IN, 3 * r), a_t)


def test_bad_plans_raise_before_any_write():
    rows, _, copy, _ = make_slots()
    x, out = torch.randn(4, IN), torch.zeros(4, sum(WIDTHS))
    token_ids, starts, info = plan([(0, [0, 1])])
    with pytest.raises(RuntimeError, match="scales go with int8 rows"):
        _C.lora_slots_apply(x, out, copy.packed[0], token_ids, starts, info)
    with pytest.raises(RuntimeError, match="reads past its row, its scales"):
        _C.lora_slots_apply(
            x, out, copy.packed[0], token_ids, starts, info, copy.scales[0][:, :8].contiguous()
        )
    with pytest.raises(RuntimeError, match="token id out of range"):
        _C.lora_slots_apply(x, out, rows, torch.tensor([0, 9]), starts, info)
    bad = info.clone()
    bad[0, 0] = len(RANKS)
    with pytest.raises(RuntimeError, match="malformed"):
        _C.lora_slots_apply(x, out, rows, token_ids, starts, bad)
    with pytest.raises(RuntimeError, match="int8 activations go with int8 rows"):
        _C.lora_slots_apply(x, out, rows, token_ids, starts, info, None, "auto", True)
    with pytest.raises(RuntimeError, match="unknown kernel instruction set"):
        _C.lora_slots_apply(x, out, copy.packed[0], token_ids, starts, info, copy.scales[0], "avx9")
    assert torch.equal(out, torch.zeros_like(out))
