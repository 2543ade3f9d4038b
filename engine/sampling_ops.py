"""Batched logits transforms used by the Sampler.

Each takes ``[R, V]`` logits plus per-row parameter tensors and returns new logits; inputs are never
modified, so the raw logits stay available for logprobs and each transform is tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from loomlm.engine.request import Request

NEG_INF = float("-inf")
# Slack on the top-p / min-p boundaries: softmax and cumsum round, and a token sitting exactly on a
# boundary (probs 0.5 + 0.3 with top_p=0.8) must land on the documented side, not on rounding noise.
_EPS = 1e-6
# Top-k/top-p first filter within this many largest logits (exact; see apply_top_k_top_p).
_CANDIDATES = 1024


def pad_token_ids(
    token_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> torch.Tensor:
    """Right-pad rows of ids into one ``[R, max(1, longest)]`` int64 tensor."""
    width = max(1, max((len(t) for t in token_ids), default=0))
    padded = [list(t) + [pad_id] * (width - len(t)) for t in token_ids]
    return torch.tensor(padded, dtype=torch.long, device=device)


def token_counts(
    token_ids: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[R, V]`` occurrences of each token per row; ids ``== vocab_size`` are padding."""
    # One spare column absorbs the padding, so no per-row lengths are needed.
    counts = torch.zeros(token_ids.shape[0], vocab_size + 1, dtype=dtype, device=token_ids.device)
    counts.scatter_add_(1, token_ids, torch.ones(token_ids.shape, dtype=dtype, device=token_ids.device))
    return counts[:, :vocab_size]


def apply_min_tokens(logits: torch.Tensor, requests: Sequence[Request]) -> torch.Tensor:
    """Mask EOS and ``stop_token_ids`` (to -inf) for rows that have not yet produced ``min_tokens``."""
    vocab = logits.shape[1]
    rows: list[int] = []
    cols: list[int] = []
    for i, req in enumerate(requests):
        params = req.sampling_params
        if req.num_output_tokens >= params.min_tokens:
            continue
        banned = set(params.stop_token_ids)
        if req.eos_token_id is not None:
            banned.add(req.eos_token_id)
        for token in banned:
            if token < vocab:
                rows.append(i)
                cols.append(token)
    if not rows:
        return logits
    index = torch.tensor([rows, cols], dtype=torch.long, device=logits.device)
    return logits.index_put((index[0], index[1]), torch.tensor(NEG_INF, device=logits.device))


def apply_penalties(
    logits: torch.Tensor,
    prompt_ids: torch.Tensor,
    output_ids: torch.Tensor,
    repetition_penalty: torch.Tensor,
    presence_penalty: torch.Tensor,
    frequency_penalty: torch.Tensor,
) -> torch.Tensor:
    """Repetition penalty over prompt + output tokens (HF / vLLM: positive logits divided, negative
    multiplied), then OpenAI presence / frequency over output tokens only:
    ``logit -= frequency * count + presence * (count > 0)``.

    ``prompt_ids`` / ``output_ids`` are ``[R, L]`` padded with ``V``; the penalties are ``[R]``.
    """
    vocab = logits.shape[1]
    out_counts = token_counts(output_ids, vocab, logits.dtype)
    out_seen = out_counts > 0
    seen = (token_counts(prompt_ids, vocab, logits.dtype) > 0) | out_seen
    rep = repetition_penalty.unsqueeze(1)
    logits = torch.where(seen, torch.where(logits > 0, logits / rep, logits * rep), logits)
    return (
        logits
        - frequency_penalty.unsqueeze(1) * out_counts
        - presence_penalty.unsqueeze(1) * out_seen.to(logits.dtype)
    )


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-k then top-p. ``top_k`` ``[R]`` int (0 = off) keeps the k largest, ties at the boundary
    broken by sort order. ``top_p`` ``[R]`` (1 = off) keeps the smallest prefix of the descending
    distribution (renormalised after top-k) whose mass reaches ``top_p``; the most likely token
    always survives.

    Sorting a 50k vocabulary per row dominates sampling cost, so the filters first run on the
    ``_CANDIDATES`` largest logits. That is exact whenever every filtering row's kept set lies in
    that prefix (k within it, or the prefix's mass already reaching top_p); otherwise a full sort runs."""
    vocab = logits.shape[1]
    full_log_mass = logits.logsumexp(dim=-1)
    num_candidates = min(vocab, max(_CANDIDATES, int(top_k.max())))
    if num_candidates < vocab:
        values, order = logits.topk(num_candidates, dim=-1, sorted=True)
        candidate_mass = (values.logsumexp(dim=-1) - full_log_mass).exp()
        k_inside = (top_k > 0) & (top_k <= num_candidates)
        p_inside = (top_p < 1) & (candidate_mass >= top_p + _EPS)
        unfiltered = (top_k == 0) & (top_p >= 1)
        if bool((k_inside | p_inside | unfiltered).all()):
            drop = _top_k_top_p_drop(values, top_k, top_p, full_log_mass)
            kept = torch.full_like(logits, NEG_INF).scatter_(1, order, values.masked_fill(drop, NEG_INF))
            return torch.where(unfiltered.unsqueeze(1), logits, kept)
    sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
    drop = _top_k_top_p_drop(sorted_logits, top_k, top_p, full_log_mass)
    return logits.masked_fill(torch.empty_like(drop).scatter_(1, order, drop), NEG_INF)


def _top_k_top_p_drop(
    sorted_logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, full_log_mass: torch.Tensor
) -> torch.Tensor:
    """Drop mask over a descending-sorted prefix of each row. Probabilities are normalised over the
    top-k set where top-k is on, else over the whole row (``full_log_mass``), so a truncated prefix
    gives the same masses as the full sort."""
    width = sorted_logits.shape[1]
    positions = torch.arange(width, device=sorted_logits.device)
    k = torch.where(top_k > 0, top_k, width).unsqueeze(1)
    drop = positions >= k
    masked = sorted_logits.masked_fill(drop, NEG_INF)
    log_mass = torch.where(top_k > 0, masked.logsumexp(dim=-1), full_log_mass).unsqueeze(1)
    probs = (masked - log_mass).exp()
    mass_before = probs.cumsum(dim=-1) - probs
    # Rows with top_p == 1 skip the test entirely: their tail mass can round past 1 - eps.
    p = top_p.unsqueeze(1)
    drop |= (mass_before >= p - _EPS) & (p < 1)
    drop[:, 0] = False
    return drop


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Keep tokens whose probability is at least ``min_p`` ``[R]`` (0 = off) times the row's largest."""
    # p_i / p_max == exp(l_i - l_max), so compare in log space: no softmax, and independent of any
    # renormalisation by earlier filters.
    threshold = logits.amax(dim=-1, keepdim=True) + torch.log(min_p).unsqueeze(1) - _EPS
    return logits.masked_fill(logits < threshold, NEG_INF)


def argmax_or_dead(logits: torch.Tensor) -> torch.Tensor:
    """Per-row argmax, or -1 for a row with no finite logit (all -inf or NaN)."""
    values, ids = logits.max(dim=-1)
    return torch.where(values > NEG_INF, ids, -1)


def exponential_race(logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Sample one token per row: with ``noise`` i.i.d. Exponential(1), ``argmax(p / noise)`` picks
    token i with probability ``p_i``, so one batched op samples every row."""
    probs = logits.softmax(dim=-1)
    # A zero draw would make 0 / 0 = NaN, which argmax would pick over every real token.
    return (probs / noise.clamp_min(torch.finfo(noise.dtype).tiny)).argmax(dim=-1)
