"""TokenBitmask: the one int32 ``[max_num_seqs, num_words]`` buffer a step's grammars write
(``num_words`` >= ceil(vocab / 32); TokenVocabulary.mask_width_words leaves room for virtual ids).

Allocated once; each step fills only the rows of constrained requests and reports which rows
those are, so the apply kernel skips everything else. On CUDA the host buffer is pinned and the
filled rows go over in one non-blocking copy before sampling.

Filling is two halves so that the host half can run on another thread while the forward runs:
``fill_host`` (grammar states -> host rows, no torch call) and ``upload`` (host rows -> the tensors
the sampler takes; on CUDA the copy is issued here, on the caller's thread and stream). ``fill`` does
both. Reusing the pinned host rows is safe because every step ends in a host sync (the sampler's
``.tolist()``), so the previous step's non-blocking copy has finished before the next fill."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from loomlm.grammar.state import GrammarState


class TokenBitmask:
    def __init__(self, max_num_seqs: int, num_words: int, device: torch.device | str = "cpu") -> None:
        if max_num_seqs < 1 or num_words < 1:
            raise ValueError(f"need max_num_seqs >= 1 and num_words >= 1, got {max_num_seqs}, {num_words}")
        self.num_words = num_words
        self.device = torch.device(device)
        pinned = self.device.type == "cuda"
        self._host = torch.zeros(max_num_seqs, self.num_words, dtype=torch.int32, pin_memory=pinned)
        self._host_rows = self._host.numpy()
        self._device = self._host if not pinned else torch.zeros_like(self._host, device=self.device)

    def fill(self, states: Sequence[GrammarState | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Fill row i from ``states[i]`` (None: unconstrained). Returns ``(bitmask, rows)`` for the
        apply kernel, or None when no row is constrained."""
        rows = self.fill_host(states)
        return self.upload(len(states), rows) if rows else None

    def fill_host(self, states: Sequence[GrammarState | None]) -> list[int]:
        """The host half of ``fill``: write the constrained rows, return their indices (maybe none).
        Touches only the host buffer and the states, never torch, so it may run on a worker thread."""
        rows = [i for i, state in enumerate(states) if state is not None]
        if rows and len(states) > self._host.shape[0]:
            raise ValueError(f"{len(states)} rows exceed the bitmask's {self._host.shape[0]}")
        host_rows = self._host_rows
        for row in rows:
            states[row].fill_bitmask(host_rows[row])
        return rows

    def upload(self, num_rows: int, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The device half of ``fill``: ``(bitmask[:num_rows], rows)`` on the bitmask's device."""
        row_index = torch.tensor(rows, dtype=torch.int64)
        if self._device is self._host:
            return self._host[:num_rows], row_index
        self._device[:num_rows].copy_(self._host[:num_rows], non_blocking=True)
        return self._device[:num_rows], row_index.to(self.device, non_blocking=True)
