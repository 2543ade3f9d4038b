"""Sampler: greedy, temperature, penalties, min_tokens, seeds, logprobs, dead rows (the top-k/top-p/min-p
filters: test_sampler_filters.py)."""

from __future__ import annotations

import math

import pytest
import torch
from sampler_support import NEG_INF, V, make_request, random_logits

from loomlm.engine.outputs import Logprob
from loomlm.engine.request import Request
from loomlm.engine.sampler import Sampler, SamplerOutput
from loomlm.engine.sampling_ops import apply_min_tokens, apply_penalties

# --- greedy and temperature ------------------------------------------------------------------------


def test_all_greedy_batch_is_argmax_and_uses_no_randomness():
    sampler = Sampler(V, 8, seed=1)
    logits = random_logits(5)
    state = sampler.generator.get_state()
    out = sampler(logits, [make_request(temperature=0.0) for _ in range(5)])
    assert isinstance(out, SamplerOutput)
    assert out.sampled_token_ids == logits.argmax(-1).tolist()
    assert out.logprobs is None
    assert torch.equal(sampler.generator.get_state(), state)


def test_greedy_rows_take_argmax_in_a_mixed_batch():
    sampler = Sampler(V, 8, seed=1)
    logits = random_logits(4)
    reqs = [make_request(temperature=0.0), make_request(temperature=1.0), make_request(temperature=0.0)]
    reqs.append(make_request(temperature=0.7, top_k=3))
    out = sampler(logits, reqs).sampled_token_ids
    assert out[0] == logits[0].argmax().item()
    assert out[2] == logits[2].argmax().item()


def test_input_logits_are_not_modified():
    sampler = Sampler(V, 4, seed=1)
    logits = random_logits(2)
    before = logits.clone()
    reqs = [
        make_request(temperature=0.9, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.5, logprobs=2),
        make_request(min_tokens=2, eos=0, frequency_penalty=1.0),
    ]
    sampler(logits, reqs)
    assert torch.equal(logits, before)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_sharpens_or_flattens_the_distribution(temperature):
    n = 6000
    base = torch.tensor([1.0, 0.0, -1.0])
    sampler = Sampler(3, n, seed=3)
    tokens = torch.tensor(
        sampler(
            base.expand(n, -1).contiguous(), [make_request(temperature=temperature)] * n
        ).sampled_token_ids
    )
    observed = torch.bincount(tokens, minlength=3).float() / n
    expected = (base / temperature).softmax(-1)
    assert torch.allclose(observed, expected, atol=0.025), (observed, expected)


def test_tiny_temperature_is_nearly_greedy():
    n = 500
    sampler = Sampler(V, n, seed=3)
    logits = random_logits(1).expand(n, -1).contiguous()
    out = sampler(logits, [make_request(temperature=0.01)] * n).sampled_token_ids
    assert set(out) == {logits[0].argmax().item()}


# --- seeds -------------------------------------------------------------------------------------------


def run_steps(sampler: Sampler, batch: list[Request], step_logits: list[torch.Tensor], row: int) -> list[int]:
    """Sample ``len(step_logits)`` steps; row ``row`` sees ``step_logits[t]`` at step t, others noise."""
    produced = []
    for step, target in enumerate(step_logits):
        logits = random_logits(len(batch), seed=1000 + step + len(batch))
        logits[row] = target
        tokens = sampler(logits, batch).sampled_token_ids
        for req, token in zip(batch, tokens, strict=True):
            req.append_output_token(token)
        produced.append(tokens[row])
    return produced


def test_seeded_request_is_reproducible_whatever_the_batch():
    steps = [random_logits(1, seed=s, scale=0.5)[0] for s in range(8)]
    alone = run_steps(Sampler(V, 8, seed=1), [make_request(seed=1234)], steps, row=0)
    assert len(set(alone)) > 1  # flat logits: the test would be vacuous if every step chose one token

    others = [
        make_request(seed=7),
        make_request(),
        make_request(temperature=0.0),
        make_request(seed=99, top_k=4),
        make_request(temperature=0.3, min_p=0.2),
    ]
    batch = [*others[:3], make_request(seed=1234), *others[3:]]
    in_batch = run_steps(Sampler(V, 8, seed=2), batch, steps, row=3)
    small = run_steps(Sampler(V, 8), [make_request(), make_request(seed=1234)], steps, row=1)
    assert in_batch == alone
    assert small == alone


def test_different_seeds_give_different_tokens():
    steps = [random_logits(1, seed=s, scale=0.3)[0] for s in range(12)]
    a = run_steps(Sampler(V, 4, seed=0), [make_request(seed=1)], steps, row=0)
    b = run_steps(Sampler(V, 4, seed=0), [make_request(seed=2)], steps, row=0)
    assert a != b


def test_seed_offset_separates_n_children():
    steps = [random_logits(1, seed=s, scale=0.3)[0] for s in range(12)]
    children = [make_request(seed=5, seed_offset=i) for i in range(2)]
    first = run_steps(Sampler(V, 4), children, steps, row=0)
    children = [make_request(seed=5, seed_offset=i) for i in range(2)]
    second = run_steps(Sampler(V, 4), children, steps, row=1)
    again = run_steps(Sampler(V, 4), [make_request(seed=5, seed_offset=1)], steps, row=0)
    assert first != second
    assert again == second


def test_unseeded_sampler_seed_makes_runs_repeatable():
    logits = random_logits(6, scale=0.3)
    reqs = [make_request() for _ in range(6)]
    assert Sampler(V, 6, seed=11)(logits, reqs) == Sampler(V, 6, seed=11)(logits, reqs)


# --- penalties and min_tokens ------------------------------------------------------------------------


def test_apply_penalties_changes_exactly_the_right_logits():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5, -1.0], [2.0, -2.0, 1.0, 0.5, -1.0]])
    pad = 5
    prompt = torch.tensor([[0, pad, pad], [0, 1, pad]])
    output = torch.tensor([[1, 1, 2], [pad, pad, pad]])
    out = apply_penalties(
        logits,
        prompt,
        output,
        repetition_penalty=torch.tensor([2.0, 1.0]),
        presence_penalty=torch.tensor([0.5, 0.5]),
        frequency_penalty=torch.tensor([0.25, 0.25]),
    )
    # Row 0: 0 is a prompt token (positive, divided; no presence/frequency: prompt only);
    # 1 appears twice in the output (negative, multiplied; then -0.5 - 2 * 0.25);
    # 2 once in the output (positive, divided; then -0.5 - 0.25); 3 and 4 untouched.
    assert out[0].tolist() == [1.0, -4.0 - 0.5 - 0.5, 0.5 - 0.5 - 0.25, 0.5, -1.0]
    # Row 1: no repetition penalty and no output tokens, so the prompt tokens change nothing.
    assert out[1].tolist() == logits[1].tolist()


def test_penalties_in_the_sampler_change_the_greedy_choice():
    sampler = Sampler(V, 4)
    logits = torch.zeros(3, V)
    logits[:, 7] = 3.0
    logits[:, 8] = 2.0
    reqs = [
        make_request(temperature=0.0, outputs=[7, 7, 7], frequency_penalty=0.5),  # 3 - 1.5 < 2
        make_request(temperature=0.0, prompt=[7], repetition_penalty=2.0),  # 3 / 2 < 2
        make_request(temperature=0.0, outputs=[7, 7, 7]),  # no penalty
    ]
    assert sampler(logits, reqs).sampled_token_ids == [8, 8, 7]


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    logits = torch.zeros(1, V)
    logits[0, [9, 4, 2]] = torch.tensor([3.0, 2.0, 1.0])  # eos 9, stop id 4, then 2
    params = dict(temperature=0.0, min_tokens=2, stop_token_ids=[4], eos=9)
    sampler = Sampler(V, 2)
    req = make_request(**params)
    masked = apply_min_tokens(logits, [req])
    assert masked[0, 9] == NEG_INF and masked[0, 4] == NEG_INF
    assert torch.equal(torch.isinf(masked[0]).nonzero().flatten(), torch.tensor([4, 9]))
    assert sampler(logits, [req]).sampled_token_ids == [2]
    req.append_output_token(2)
    assert sampler(logits, [req]).sampled_token_ids == [2]
    req.append_output_token(2)
    assert sampler(logits, [req]).sampled_token_ids == [9]
    assert apply_min_tokens(logits, [req]) is logits


# --- logprobs ----------------------------------------------------------------------------------------


def test_logprobs_come_from_raw_logits_with_ranks_and_the_sampled_token():
    logits = random_logits(3)
    raw = logits.log_softmax(-1)
    order = raw[0].argsort(descending=True).tolist()
    # Forbid the five best tokens via min_tokens, so the greedy pick is the raw 6th (rank 6).
    reqs = [
        make_request(temperature=0.0, logprobs=3, min_tokens=1, stop_token_ids=order[:5]),
        make_request(),
        make_request(temperature=0.5, logprobs=0, seed=3),
    ]
    out = Sampler(V, 4, seed=0)(logits, reqs)
    assert out.sampled_token_ids[0] == order[5]
    assert out.logprobs is not None and out.logprobs[1] is None
    row0 = out.logprobs[0]
    assert set(row0) == {*order[:3], order[5]}
    for rank, token in enumerate(order[:3], start=1):
        assert row0[token].rank == rank
        assert math.isclose(row0[token].logprob, raw[0, token].item(), rel_tol=1e-6)
    assert row0[order[5]].rank == 6
    assert math.isclose(row0[order[5]].logprob, raw[0, order[5]].item(), rel_tol=1e-6)
    assert row0[order[5]].decoded_token is None
    # logprobs=0: only the sampled token, ranked among the raw logits.
    token2 = out.sampled_token_ids[2]
    expected_rank = int((raw[2] > raw[2, token2]).sum()) + 1
    assert list(out.logprobs[2]) == [token2]
    assert out.logprobs[2][token2] == Logprob(pytest.approx(raw[2, token2].item()), expected_rank)


# --- dead rows and validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        dict(temperature=0.0),
        dict(temperature=1.0, seed=4),
        dict(temperature=0.8, top_k=3, top_p=0.9, min_p=0.1, repetition_penalty=1.3, logprobs=2),
    ],
)
def test_an_all_neg_inf_row_returns_minus_one_and_spares_the_others(params):
    logits = random_logits(3)
    logits[1] = NEG_INF
    reqs = [make_request(temperature=0.0), make_request(**params), make_request(seed=8)]
    out = Sampler(V, 4, seed=0)(logits, reqs)
    assert out.sampled_token_ids[1] == -1
    assert out.sampled_token_ids[0] == logits[0].argmax().item()
    alone = Sampler(V, 4, seed=5)(logits[2:].clone(), [make_request(seed=8)])
    assert out.sampled_token_ids[2] == alone.sampled_token_ids[0]


def test_bad_shapes_are_rejected():
    sampler = Sampler(V, 2)
    with pytest.raises(ValueError, match="max_num_seqs"):
        sampler(torch.zeros(3, V), [make_request()] * 3)
    with pytest.raises(ValueError, match="shape"):
        sampler(torch.zeros(1, V + 1), [make_request()])
