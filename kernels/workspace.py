"""AttentionWorkspace: state the torch attention path reuses across layers and steps.

Gathering a decode batch's paged K/V copies tens of MB per layer. A fresh tensor that size is a
fresh mmap and page faults on every layer (~5x the copy itself), so the buffers are kept and
only grown, geometrically, when a step needs more. The gather index and padding mask depend only
on the step's block tables and lengths, which all layers share: built once, reused by the rest."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class AttentionWorkspace:
    def __init__(self) -> None:
        self._key = torch.empty(0)
        self._value = torch.empty(0)
        self._plan_key: tuple[torch.Tensor, torch.Tensor, int, int] | None = None
        self._plan: list[DecodeBucket] = []

    def kv_buffers(
        self, num_rows: int, row_numel: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two ``[num_rows, row_numel]`` views into the kept buffers (contents undefined)."""
        numel = num_rows * row_numel
        if self._key.numel() < numel or self._key.dtype != dtype or self._key.device != device:
            capacity = max(numel, int(self._key.numel() * 1.5)) if self._key.dtype == dtype else numel
            self._key = torch.empty(capacity, dtype=dtype, device=device)
            self._value = torch.empty(capacity, dtype=dtype, device=device)
        return self._key[:numel].view(num_rows, row_numel), self._value[:numel].view(num_rows, row_numel)

    def decode_plan(
        self, block_tables: torch.Tensor, seq_lens: torch.Tensor, block_size: int, num_blocks: int
    ) -> list[DecodeBucket]:
        """Split a decode batch into buckets of similar length, each gathered only up to its own
        longest context: padding every sequence to the batch's longest would gather (and attend
        over) far more than the batch holds. Cached by tensor identity: every layer of a step
        passes the same tensors."""
        key = self._plan_key
        if (
            key is None
            or key[0] is not block_tables
            or key[1] is not seq_lens
            or key[2:]
            != (
                block_size,
                num_blocks,
            )
        ):
            self._plan = _make_plan(block_tables, seq_lens, block_size, num_blocks)
            self._plan_key = (block_tables, seq_lens, block_size, num_blocks)
        return self._plan


@dataclass(slots=True)
class DecodeBucket:
    rows: torch.Tensor | None  # which sequences of the batch (None: all, in order)
    blocks: torch.Tensor  # flat block ids to gather, [num_seqs * blocks_per_seq]
    mask: torch.Tensor  # [num_seqs, 1, 1, context_len] key-padding mask
    num_seqs: int


# Buckets are worth their per-call overhead only for batches at least this large.
_MIN_SEQS_PER_BUCKET = 8
_MAX_BUCKETS = 4


def _make_plan(
    block_tables: torch.Tensor, seq_lens: torch.Tensor, block_size: int, num_blocks: int
) -> list[DecodeBucket]:
    num_seqs = seq_lens.shape[0]
    num_buckets = max(1, min(_MAX_BUCKETS, num_seqs // _MIN_SEQS_PER_BUCKET))
    if num_buckets == 1:
        groups: list[torch.Tensor | None] = [None]
    else:
        order = torch.argsort(seq_lens, stable=True)
        groups = list(order.tensor_split(num_buckets))
    plan = []
    for rows in groups:
        lens = seq_lens if rows is None else seq_lens[rows]
        tables = block_tables if rows is None else block_tables[rows]
        blocks_per_seq = min(-(-int(lens.max()) // block_size), tables.shape[1])
        # Entries past a sequence's blocks are arbitrary: clamp in bounds (they are masked).
        blocks = tables[:, :blocks_per_seq].to(torch.int64).clamp(0, num_blocks - 1).reshape(-1)
        positions = torch.arange(blocks_per_seq * block_size, device=seq_lens.device)
        mask = (positions[None, :] < lens[:, None].to(positions.dtype))[:, None, None, :]
        plan.append(DecodeBucket(rows, blocks, mask, lens.shape[0]))
    return plan
