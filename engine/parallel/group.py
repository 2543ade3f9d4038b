"""TPGroup: one rank's view of its tensor-parallel group, and the only code that calls collectives.

The model's layers hold a TPGroup and call ``all_reduce`` (row-parallel outputs, the vocab-parallel
embedding) and ``gather_to_first`` (the vocab-parallel LM head). With one rank both are no-ops, so
the single-process model runs the same code without torch.distributed initialised."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(slots=True, frozen=True)
class TPGroup:
    rank: int
    world_size: int
    group: dist.ProcessGroup | None = None  # None with one rank

    @classmethod
    def single(cls) -> TPGroup:
        return cls(0, 1, None)

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a group of {self.world_size}")
        if self.world_size > 1 and self.group is None:
            raise ValueError("a group of more than one rank needs its torch.distributed process group")

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place; returns it."""
        if self.world_size > 1:
            dist.all_reduce(tensor, group=self.group)
        return tensor

    def gather_to_first(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Rank 0 gets every rank's ``tensor`` concatenated along the last dimension (rank order);
        the other ranks get None. Every rank's tensor has the same shape."""
        if self.world_size == 1:
            return tensor
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)] if self.is_first else None
        dist.gather(tensor, parts, dst=dist.get_global_rank(self.group, 0), group=self.group)
        return torch.cat(parts, dim=-1) if parts is not None else None
