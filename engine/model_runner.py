"""ModelRunner: turns a SchedulerOutput into one flat batch, runs the model over the paged KV
cache and returns logits for the rows that sample.

Host-side inputs are built with numpy in buffers allocated once and sliced per step; the only
per-request Python is copying each chunk's tokens and block table row."""

from __future__ import annotations

import numpy as np
import torch

from loomlm.adapters.layers import LoRAModelWeights, LoRAStep
from loomlm.adapters.metadata import LoRABatchMetadataBuilder
from loomlm.engine.models.arch import LlamaArch
from loomlm.engine.models.attention import AttentionMetadata
from loomlm.engine.models.llama import LlamaForCausalLM
from loomlm.engine.outputs import ScheduledChunk, SchedulerOutput
from loomlm.kernels import AttentionWorkspace


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        arch: LlamaArch,
        *,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        lora_weights: LoRAModelWeights | None = None,
    ) -> None:
        self.model = model
        self.arch = arch
        self.block_size = block_size
        self.device = torch.device(device)
        cache_shape = (num_blocks, block_size, arch.num_kv_heads, arch.head_dim)
        self.kv_caches = [
            (
                torch.zeros(cache_shape, dtype=dtype, device=self.device),
                torch.zeros(cache_shape, dtype=dtype, device=self.device),
            )
            for _ in range(arch.num_layers)
        ]
        max_blocks_per_seq = -(-max_model_len // block_size)
        self._block_tables = np.zeros((max_num_seqs, max_blocks_per_seq), dtype=np.int32)
        self._token_arange = np.arange(max_num_batched_tokens, dtype=np.int64)
        self._input_ids = np.zeros(max_num_batched_tokens, dtype=np.int64)
        self._seq_arange = np.arange(max_num_seqs, dtype=np.int64)
        self._workspace = AttentionWorkspace()
        self.lora_weights = lora_weights
        self._lora_builder = (
            LoRABatchMetadataBuilder(max_num_batched_tokens, lora_weights.num_slots, self.device)
            if lora_weights is not None
            else None
        )
        self._seq_slots = np.full(max_num_seqs, -1, dtype=np.int32)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def prepare_inputs(
        self, scheduler_output: SchedulerOutput
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor, LoRAStep | None]:
        chunks, lora_order = self._lora_ordered(scheduler_output.chunks)
        num_seqs = len(chunks)
        num_tokens = scheduler_output.num_scheduled_tokens
        token_ids = self._input_ids[:num_tokens]
        offset = 0
        starts = np.empty(num_seqs, dtype=np.int64)
        query_lens = np.empty(num_seqs, dtype=np.int64)
        samples = np.empty(num_seqs, dtype=bool)
        max_blocks = 1
        for i, chunk in enumerate(chunks):
            token_ids[offset : offset + chunk.num_tokens] = chunk.request.all_token_ids[
                chunk.start_position : chunk.end_position
            ]
            offset += chunk.num_tokens
            starts[i] = chunk.start_position
            query_lens[i] = chunk.num_tokens
            samples[i] = chunk.samples
            self._block_tables[i, : len(chunk.block_ids)] = chunk.block_ids
            max_blocks = max(max_blocks, len(chunk.block_ids))
            slot = chunk.request.adapter_slot
            self._seq_slots[i] = -1 if slot is None else slot

        if offset != num_tokens:
            raise ValueError(f"the chunks hold {offset} tokens but num_scheduled_tokens is {num_tokens}")
        query_start_loc = np.zeros(num_seqs + 1, dtype=np.int64)
        np.cumsum(query_lens, out=query_start_loc[1:])
        seq_lens = starts + query_lens
        # position of token t = start of its sequence + its offset within the sequence's chunk
        positions = np.repeat(starts - query_start_loc[:-1], query_lens) + self._token_arange[:num_tokens]
        seq_of_token = np.repeat(self._seq_arange[:num_seqs], query_lens)
        block_tables = self._block_tables[:num_seqs, :max_blocks]
        slot_mapping = (
            block_tables[seq_of_token, positions // self.block_size].astype(np.int64) * self.block_size
            + positions % self.block_size
        )
        last_rows = query_start_loc[1:] - 1
        if lora_order is not None:  # back to the scheduler's order, which the sampler expects
            position = np.empty(num_seqs, dtype=np.int64)
            position[lora_order] = self._seq_arange[:num_seqs]
            last_rows, samples = last_rows[position], samples[position]
        logits_indices = last_rows[samples]

        metadata = AttentionMetadata(
            slot_mapping=self._to_device(slot_mapping),
            block_tables=self._to_device(np.ascontiguousarray(block_tables)),
            seq_lens=self._to_device(seq_lens.astype(np.int32)),
            query_start_loc=self._to_device(query_start_loc.astype(np.int32)),
            max_query_len=int(query_lens.max()),
            max_seq_len=int(seq_lens.max()),
            workspace=self._workspace,
        )
        # Reusing the buffer is safe: an upload from pageable host memory is done when it returns.
        input_ids = self._to_device(token_ids)
        lora = self._lora_step(query_lens) if lora_order is not None else None
        return input_ids, self._to_device(positions), metadata, self._to_device(logits_indices), lora

    def _lora_ordered(self, chunks: list[ScheduledChunk]) -> tuple[list[ScheduledChunk], np.ndarray | None]:
        """The step's chunks grouped by adapter slot (stable), and the order used (None: no chunk has
        an adapter). Every adapter's tokens then form one run of rows, which the CPU LoRA path
        updates in place instead of gathering and scattering them."""
        if all(c.request.adapter_slot is None for c in chunks):
            return chunks, None
        if self._lora_builder is None or self.lora_weights is None:
            raise ValueError("a request has an adapter slot but the runner has no LoRA weights")
        slots = np.fromiter(
            (-1 if c.request.adapter_slot is None else c.request.adapter_slot for c in chunks),
            np.int64,
            len(chunks),
        )
        order = np.argsort(slots, kind="stable")
        return [chunks[i] for i in order], order

    def _lora_step(self, query_lens: np.ndarray) -> LoRAStep:
        """Group this step's tokens by adapter slot, once for every layer (`_lora_ordered` has checked
        that the runner has LoRA weights)."""
        token_slots = np.repeat(self._seq_slots[: query_lens.shape[0]], query_lens)
        return self.lora_weights.step(self._lora_builder.build(token_slots))

    @torch.inference_mode()
    def execute(self, scheduler_output: SchedulerOutput) -> torch.Tensor:
        """Logits ``[num_sampling_rows, vocab]`` (float32), in ``sampling_chunks`` order."""
        input_ids, positions, metadata, logits_indices, lora = self.prepare_inputs(scheduler_output)
        hidden = self.model(input_ids, positions, self.kv_caches, metadata, lora)
        return self.model.compute_logits(hidden[logits_indices]).float()
