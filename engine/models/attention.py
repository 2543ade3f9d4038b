"""Attention over the paged KV cache: per-step metadata and the layer that stores and attends."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loomlm.kernels import AttentionWorkspace, paged_attention


@dataclass(slots=True)
class AttentionMetadata:
    """Built once per step by the ModelRunner, shared by every layer."""

    slot_mapping: torch.Tensor  # [num_tokens] int64: where each new token's KV goes
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32
    seq_lens: torch.Tensor  # [num_seqs] int32: context length including this step's tokens
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32: offsets of each sequence's tokens
    max_query_len: int
    max_seq_len: int
    workspace: AttentionWorkspace | None = None  # gather buffers kept across steps (CPU path)


class PagedAttention(torch.nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5

    def forward(
        self,
        query: torch.Tensor,  # [T, num_heads, head_dim]
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """Attention of the step's queries over the cache, which holds this step's keys and values
        already (every token's KV is written before any token attends: a chunk sees its own keys)."""
        key_cache, value_cache = kv_cache
        return paged_attention(
            query,
            key_cache,
            value_cache,
            metadata.block_tables,
            metadata.seq_lens,
            metadata.query_start_loc,
            self.scale,
            metadata.max_query_len,
            metadata.max_seq_len,
            workspace=metadata.workspace,
        )
