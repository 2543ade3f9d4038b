"""AttentionWorkspace: state the torch attention path reuses across layers and steps.

Gathering a decode batch's paged K/V copies tens of MB per layer. A fresh tensor that size is a
fresh mmap and page faults on every layer (~5x the copy itself), so the buffers are kept and
only grown, geometrically, when a step needs more. The gather index and padding mask depend only
on the step's block tables and lengths, which all layers share: built once, reused by the rest."""

from __future__ import annotations

import torch


class AttentionWorkspace:
    def __init__(self) -> None:
        self._key = torch.empty(0)
        self._value = torch.empty(0)
        self._index_inputs: tuple[torch.Tensor, torch.Tensor, int, int] | None = None
        self._index: tuple[torch.Tensor, torch.Tensor] | None = None

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

    def decode_index(
        self,
        block_tables: torch.Tensor,
        seq_lens: torch.Tensor,
        blocks_per_seq: int,
        block_size: int,
        num_blocks: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat block ids to gather and the ``[seqs, 1, 1, context]`` key-padding mask. Cached by
        tensor identity: the same step passes the same tensors to every layer."""
        inputs = self._index_inputs
        if (
            self._index is None
            or inputs is None
            or inputs[0] is not block_tables
            or inputs[1] is not seq_lens
            or inputs[2:] != (blocks_per_seq, block_size)
        ):
            # Entries past a sequence's blocks are arbitrary: clamp in bounds (they are masked).
            blocks = block_tables[:, :blocks_per_seq].to(torch.int64).clamp(0, num_blocks - 1).reshape(-1)
            positions = torch.arange(blocks_per_seq * block_size, device=seq_lens.device)
            mask = (positions[None, :] < seq_lens[:, None].to(positions.dtype))[:, None, None, :]
            self._index_inputs = (block_tables, seq_lens, blocks_per_seq, block_size)
            self._index = (blocks, mask)
        return self._index
