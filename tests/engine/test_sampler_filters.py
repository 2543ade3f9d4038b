"""Top-k, top-p and min-p: the support each keeps (exactly, at ties and rounding boundaries), their
order when combined, per-row values, and the candidate-prefix fast path against the full sort."""

from __future__ import annotations

import pytest
import torch
from sampler_support import V, finite_set, sampled_support

from loomlm.engine.sampling_ops import apply_min_p, apply_top_k_top_p

# --- top-k / top-p / min-p ---------------------------------------------------------------------------


def test_top_k_support_is_exactly_the_k_largest():
    logits = torch.linspace(1.0, 0.0, V)[torch.randperm(V, generator=torch.Generator().manual_seed(0))]
    probs = logits.softmax(-1).tolist()
    expected = set(logits.topk(5).indices.tolist())
    assert sampled_support(probs, top_k=5) == expected


def test_top_k_ties_at_the_boundary_keep_exactly_k():
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, -1.0]])
    out = apply_top_k_top_p(logits, torch.tensor([2]), torch.tensor([1.0]))
    assert len(finite_set(out[0])) == 2
    assert finite_set(out[0]) <= {1, 2, 3, 4}


@pytest.mark.parametrize(
    ("top_p", "expected"), [(0.8, {3, 0}), (0.81, {3, 0, 2}), (0.3, {3}), (1.0, {0, 1, 2, 3})]
)
def test_top_p_keeps_the_smallest_prefix_reaching_top_p(top_p, expected):
    probs = [0.3, 0.05, 0.15, 0.5]  # descending order: 3, 0, 2, 1
    logits = torch.tensor([probs]).log()
    assert finite_set(apply_top_k_top_p(logits, torch.tensor([0]), torch.tensor([top_p]))[0]) == expected
    assert sampled_support(probs, top_p=top_p) == expected


def test_top_p_boundary_is_not_moved_by_rounding():
    # float32 softmax + cumsum put 0.5 + 0.3 just below 0.8; the boundary token must still be dropped.
    logits = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log()
    out = apply_top_k_top_p(logits, torch.tensor([0]), torch.tensor([0.8]))
    assert finite_set(out[0]) == {0, 1}


@pytest.mark.parametrize(
    ("min_p", "expected"), [(0.2, {0, 1, 2}), (0.5, {0, 1, 2}), (0.51, {0, 1}), (0.0, set(range(5)))]
)
def test_min_p_keeps_tokens_at_least_min_p_times_the_max(min_p, expected):
    probs = [0.4, 0.3, 0.2, 0.06, 0.04]  # min_p=0.5 -> threshold 0.2, which token 2 meets exactly
    logits = torch.tensor([probs]).log()
    assert finite_set(apply_min_p(logits, torch.tensor([min_p]))[0]) == expected
    assert sampled_support(probs, min_p=min_p) == expected


def test_filters_combine_in_order_top_k_then_top_p_then_min_p():
    probs = [0.3, 0.25, 0.2, 0.15, 0.1]
    # top_k=4 drops 4; top_p=0.8 over the renormalised four drops 3 (alone it would keep 3);
    # min_p=0.7 drops 2 (0.2 < 0.7 * 0.3).
    assert sampled_support(probs, top_p=0.8) == {0, 1, 2, 3}
    assert sampled_support(probs, top_k=4, top_p=0.8) == {0, 1, 2}
    assert sampled_support(probs, top_k=4, top_p=0.8, min_p=0.7) == {0, 1}


def test_filters_are_per_row():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3).log()
    out = apply_top_k_top_p(logits, torch.tensor([1, 0, 0]), torch.tensor([1.0, 0.8, 1.0]))
    assert [finite_set(row) for row in out] == [{0}, {0, 1}, {0, 1, 2, 3}]


@pytest.mark.parametrize("flat_row", [False, True])
def test_top_k_top_p_on_a_large_vocab_matches_the_full_sort(monkeypatch, flat_row):
    """The candidate-prefix fast path keeps exactly the same support as a full sort; a row whose
    nucleus does not fit the prefix (flat logits) falls back to the full sort."""
    import loomlm.engine.sampling_ops as ops

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 8000, generator=generator) * 4  # peaked, like a language model
    if flat_row:
        logits[2] = torch.randn(8000, generator=generator) * 0.01
    top_k = torch.tensor([0, 5, 0, 2000, 0, 0])
    top_p = torch.tensor([0.9, 1.0, 0.95, 0.5, 1.0, 0.3])
    fast = apply_top_k_top_p(logits, top_k, top_p)
    monkeypatch.setattr(ops, "_CANDIDATES", 10**9)
    full = apply_top_k_top_p(logits, top_k, top_p)
    assert torch.equal(torch.isfinite(fast), torch.isfinite(full))
    assert torch.equal(fast[torch.isfinite(fast)], full[torch.isfinite(full)])
    assert torch.isfinite(fast[4]).all()  # a row with no filter keeps everything
