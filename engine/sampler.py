"""Sampler: one batched step from logits to next tokens.

Order per row: the grammar bitmask (forbidden tokens to -inf), min_tokens masking, penalties,
then greedy argmax (temperature 0) or temperature,
top-k, top-p, min-p and an exponential-race sample. Logprobs come from the raw model logits.

Rows come back in the order of the requests given (the scheduler's sampling order). A row whose
logits are all -inf (a grammar mask that left nothing) gets token **-1** instead of crashing the
batch; the scheduler fails that request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from loomlm.engine import sampling_ops as ops
from loomlm.engine.outputs import Logprob, SamplerOutput
from loomlm.kernels.token_bitmask import apply_token_bitmask

if TYPE_CHECKING:
    from loomlm.engine.request import Request
    from loomlm.engine.sampling_params import SamplingParams

# Rows of the per-step parameter table.
_TEMP, _TOP_K, _TOP_P, _MIN_P, _REP, _PRES, _FREQ = range(7)
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def seeded_stream_key(seed: int, step: int) -> int:
    """Generator seed for draw ``step`` of a seeded request: depends on nothing else in the batch."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ step) & ((1 << 63) - 1)


def _uses_penalties(params: SamplingParams) -> bool:
    return (
        params.repetition_penalty != 1.0 or params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
    )


class Sampler:
    """One per engine. Unseeded rows draw from ``self.generator`` (seeded from ``seed``, else OS
    entropy); seeded rows from a generator keyed on (seed + seed_offset, num_output_tokens)."""

    def __init__(
        self, vocab_size: int, max_num_seqs: int, device: torch.device | str = "cpu", seed: int | None = None
    ) -> None:
        self.vocab_size = vocab_size
        self.max_num_seqs = max_num_seqs
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        # Per-row parameters, filled on the host and uploaded in one copy per step. The pinned staging
        # buffer is safe to reuse: every step ends in a host sync (.tolist()), so the previous
        # non-blocking copy has finished before the next step overwrites it.
        self._table = torch.zeros(7, max_num_seqs, dtype=torch.float32, device=self.device)
        if self.device.type == "cpu":
            self._table_host = self._table
        else:
            self._table_host = torch.zeros(7, max_num_seqs, dtype=torch.float32, pin_memory=True)

    @torch.inference_mode()
    def __call__(
        self,
        logits: torch.Tensor,
        requests: Sequence[Request],
        token_bitmask: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> SamplerOutput:
        """Sample one token per row; ``logits`` is ``[len(requests), vocab_size]``. ``token_bitmask``
        is ``(bitmask, rows)`` from the grammar stage: rows listed there may only take allowed tokens.
        ``logits`` is masked in place unless a row asks for logprobs (those come from the raw model)."""
        num_rows = len(requests)
        if logits.dim() != 2 or logits.shape[0] != num_rows or logits.shape[1] != self.vocab_size:
            raise ValueError(f"logits shape {tuple(logits.shape)} != ({num_rows}, {self.vocab_size})")
        if num_rows > self.max_num_seqs:
            raise ValueError(f"{num_rows} rows exceed max_num_seqs={self.max_num_seqs}")
        all_params = [r.sampling_params for r in requests]
        want_logprobs = any(p.logprobs is not None for p in all_params)
        want_min_tokens = any(r.num_output_tokens < r.sampling_params.min_tokens for r in requests)
        want_penalties = any(_uses_penalties(p) for p in all_params)
        all_greedy = all(p.temperature == 0.0 for p in all_params)
        raw_logits = logits
        if token_bitmask is not None:
            if want_logprobs:
                logits = logits.clone()
            apply_token_bitmask(logits, *token_bitmask)

        if all_greedy and not (want_logprobs or want_min_tokens or want_penalties):
            # The common benchmark case: one fused max, no parameter upload, no RNG.
            return SamplerOutput(ops.argmax_or_dead(logits).tolist())

        table = self._upload(all_params)
        x = logits
        if want_min_tokens:
            x = ops.apply_min_tokens(x, requests)
        if want_penalties:
            x = self._penalise(x, requests, table)
        tokens = ops.argmax_or_dead(x)
        if not all_greedy:
            sampled = self._sample(x, requests, table)
            # Dead rows keep -1 from the argmax; the sampled path would pick an arbitrary id there.
            tokens = torch.where((table[_TEMP] == 0) | (tokens < 0), tokens, sampled)
        if not want_logprobs:
            return SamplerOutput(tokens.tolist())
        return self._with_logprobs(raw_logits, tokens, all_params)

    def _upload(self, all_params: list[SamplingParams]) -> torch.Tensor:
        num_rows = len(all_params)
        host = torch.tensor(
            [
                [p.temperature for p in all_params],
                [p.top_k for p in all_params],
                [p.top_p for p in all_params],
                [p.min_p for p in all_params],
                [p.repetition_penalty for p in all_params],
                [p.presence_penalty for p in all_params],
                [p.frequency_penalty for p in all_params],
            ],
            dtype=torch.float32,
        )
        self._table_host[:, :num_rows].copy_(host)
        table = self._table[:, :num_rows]
        if self._table is not self._table_host:
            table.copy_(self._table_host[:, :num_rows], non_blocking=True)
        return table

    def _penalise(self, x: torch.Tensor, requests: Sequence[Request], table: torch.Tensor) -> torch.Tensor:
        # Only rows that use a penalty contribute ids, so a batch with one penalised row does not pay
        # for padding every other row's prompt.
        pad = x.shape[1]
        prompts = [
            r.prompt_token_ids if r.sampling_params.repetition_penalty != 1.0 else () for r in requests
        ]
        outputs = [r.output_token_ids if _uses_penalties(r.sampling_params) else () for r in requests]
        return ops.apply_penalties(
            x,
            ops.pad_token_ids(prompts, pad, x.device),
            ops.pad_token_ids(outputs, pad, x.device),
            table[_REP],
            table[_PRES],
            table[_FREQ],
        )

    def _sample(self, x: torch.Tensor, requests: Sequence[Request], table: torch.Tensor) -> torch.Tensor:
        all_params = [r.sampling_params for r in requests]
        temperature = table[_TEMP]
        # Greedy rows are divided by 1 here; their sample is discarded in favour of the argmax.
        x = x / torch.where(temperature > 0, temperature, 1.0).unsqueeze(1)
        if any(p.top_k > 0 or p.top_p < 1.0 for p in all_params):
            x = ops.apply_top_k_top_p(x, table[_TOP_K].long(), table[_TOP_P])
        if any(p.min_p > 0.0 for p in all_params):
            x = ops.apply_min_p(x, table[_MIN_P])
        noise = torch.empty_like(x).exponential_(generator=self.generator)
        for row, req in enumerate(requests):
            params = req.sampling_params
            if params.seed is None or params.temperature == 0.0:
                continue
            # Counter-based: the draw depends only on (seed + offset, step), never on batch layout.
            key = seeded_stream_key(params.seed + req.seed_offset, req.num_output_tokens)
            gen = torch.Generator(device=self.device).manual_seed(key)
            noise[row] = torch.empty(x.shape[1], dtype=x.dtype, device=x.device).exponential_(generator=gen)
        return ops.exponential_race(x, noise)

    def _with_logprobs(
        self, logits: torch.Tensor, tokens: torch.Tensor, all_params: list[SamplingParams]
    ) -> SamplerOutput:
        logprobs = logits.log_softmax(dim=-1)
        n = min(max(p.logprobs or 0 for p in all_params), logits.shape[1])
        chosen = logprobs.gather(1, tokens.clamp_min(0).unsqueeze(1))
        rank = (logprobs > chosen).sum(dim=-1, keepdim=True) + 1
        top_values, top_ids = logprobs.topk(n, dim=-1)
        # Pack everything into one tensor so the step still has a single device -> host sync.
        packed = torch.cat(
            [t.to(torch.float64) for t in (tokens.unsqueeze(1), chosen, rank, top_values, top_ids)], dim=1
        )
        token_ids: list[int] = []
        per_row: list[dict[int, Logprob] | None] = []
        for params, row in zip(all_params, packed.tolist(), strict=True):
            token = int(row[0])
            token_ids.append(token)
            if params.logprobs is None:
                per_row.append(None)
                continue
            entry: dict[int, Logprob] = {}
            if token >= 0:
                entry[token] = Logprob(row[1], int(row[2]))
            for j in range(min(params.logprobs, n)):
                entry[int(row[3 + n + j])] = Logprob(row[3 + j], j + 1)
            per_row.append(entry)
        return SamplerOutput(token_ids, per_row)
