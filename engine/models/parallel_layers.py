"""The vocabulary-parallel embedding: each rank holds a slice of the rows, looks up the ids that fall
in it and zeroes the rest; one all-reduce gives every rank the full embeddings (exact: each sum
has one non-zero term). With one rank it is a plain lookup."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loomlm.engine.parallel.group import TPGroup


class VocabParallelEmbedding(nn.Module):
    def __init__(self, num_rows: int, hidden_size: int, vocab_start: int, tp: TPGroup) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_rows, hidden_size))
        self.vocab_start = vocab_start
        self.tp = tp

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.world_size == 1:
            return F.embedding(input_ids, self.weight)
        local_ids = input_ids - self.vocab_start
        in_slice = (local_ids >= 0) & (local_ids < self.weight.shape[0])
        hidden = F.embedding(local_ids.clamp(0, self.weight.shape[0] - 1), self.weight)
        hidden.mul_(in_slice.unsqueeze(-1).to(hidden.dtype))
        return self.tp.all_reduce(hidden)
