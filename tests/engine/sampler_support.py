"""Requests and logits the sampler tests build by hand, and what a sampler draws from a distribution."""

from __future__ import annotations

import torch

from loomlm.engine.request import Request
from loomlm.engine.sampler import Sampler
from loomlm.engine.sampling_params import SamplingParams

V = 50
NEG_INF = float("-inf")


def make_request(prompt=(1, 2, 3), outputs=(), eos=None, seed_offset=0, **params) -> Request:
    req = Request(
        request_id="r",
        prompt_token_ids=list(prompt),
        sampling_params=SamplingParams(**params),
        eos_token_id=eos,
        seed_offset=seed_offset,
    )
    for token in outputs:
        req.append_output_token(token)
    return req


def random_logits(rows: int, vocab: int = V, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def sampled_support(probs: list[float], num_draws: int = 800, **params) -> set[int]:
    """The set of tokens drawn from ``num_draws`` identical rows with the given probabilities."""
    sampler = Sampler(len(probs), num_draws, seed=0)
    logits = torch.tensor(probs).log().expand(num_draws, -1).contiguous()
    req = make_request(**params)
    return set(sampler(logits, [req] * num_draws).sampled_token_ids)


def finite_set(row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(row)).flatten().tolist())
