"""TokenBitmask: the one int32 ``[max_num_seqs, num_words]`` buffer a step's grammars write
(``num_words`` >= ceil(vocab / 32); TokenVocabulary.mask_width_words leaves room for virtual ids).

Allocated once; each step fills only the rows of constrained requests and reports which rows
those are, so the apply kernel skips everything else. On CUDA the host buffer is pinned and the
filled rows go over in one non-blocking copy while the forward pass is still running."""

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
        rows = [i for i, state in enumerate(states) if state is not None]
        if not rows:
            return None
        if len(states) > self._host.shape[0]:
            raise ValueError(f"{len(states)} rows exceed the bitmask's {self._host.shape[0]}")
        for row in rows:
            states[row].fill_bitmask(self._host_rows[row])
        num_rows = len(states)
        row_index = torch.tensor(rows, dtype=torch.int64)
        if self._device is self._host:
            return self._host[:num_rows], row_index
        self._device[:num_rows].copy_(self._host[:num_rows], non_blocking=True)
        return self._device[:num_rows], row_index.to(self.device, non_blocking=True)
