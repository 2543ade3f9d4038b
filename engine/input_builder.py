"""InputBuilder: turns a SchedulerOutput into the step's `ModelInput` (flat host arrays).

Built in the engine process for every executor, with numpy in buffers allocated once and sliced per
step; the only per-request Python is copying each chunk's tokens and block table row. Chunks are
grouped by adapter slot (stable) so each adapter's tokens form one run of rows, which the CPU LoRA
path updates in place; the logits rows come back in the scheduler's order, which the sampler expects."""

from __future__ import annotations

import numpy as np

from loomlm.engine.outputs import ModelInput, ScheduledChunk, SchedulerOutput


class InputBuilder:
    def __init__(
        self, *, block_size: int, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int
    ) -> None:
        self.block_size = block_size
        max_blocks_per_seq = -(-max_model_len // block_size)
        self._block_tables = np.zeros((max_num_seqs, max_blocks_per_seq), dtype=np.int32)
        self._token_arange = np.arange(max_num_batched_tokens, dtype=np.int64)
        self._input_ids = np.zeros(max_num_batched_tokens, dtype=np.int64)
        self._seq_arange = np.arange(max_num_seqs, dtype=np.int64)
        self._seq_slots = np.full(max_num_seqs, -1, dtype=np.int32)

    def build(self, scheduler_output: SchedulerOutput) -> ModelInput:
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
        token_slots = None
        if lora_order is not None:  # back to the scheduler's order, which the sampler expects
            position = np.empty(num_seqs, dtype=np.int64)
            position[lora_order] = self._seq_arange[:num_seqs]
            last_rows, samples = last_rows[position], samples[position]
            token_slots = np.repeat(self._seq_slots[:num_seqs], query_lens)
        return ModelInput(
            input_ids=token_ids,
            positions=positions,
            slot_mapping=slot_mapping,
            block_tables=np.ascontiguousarray(block_tables),
            seq_lens=seq_lens.astype(np.int32),
            query_start_loc=query_start_loc.astype(np.int32),
            max_query_len=int(query_lens.max()),
            max_seq_len=int(seq_lens.max()),
            logits_indices=last_rows[samples],
            token_slots=token_slots,
        )

    @staticmethod
    def _lora_ordered(chunks: list[ScheduledChunk]) -> tuple[list[ScheduledChunk], np.ndarray | None]:
        """The step's chunks grouped by adapter slot (stable), and the order used (None: no chunk has
        an adapter)."""
        if all(c.request.adapter_slot is None for c in chunks):
            return chunks, None
        slots = np.fromiter(
            (-1 if c.request.adapter_slot is None else c.request.adapter_slot for c in chunks),
            np.int64,
            len(chunks),
        )
        order = np.argsort(slots, kind="stable")
        return [chunks[i] for i in order], order


def single_sequence_input(token_ids: list[int], block_size: int, all_logits: bool = False) -> ModelInput:
    """One sequence computed whole from KV slot 0 on (blocks 0, 1, ...), outside the scheduler: the
    load-time calibration (the pool is still free) and the perplexity bench. Logits rows: the last
    position, or every position with ``all_logits``."""
    n = len(token_ids)
    positions = np.arange(n, dtype=np.int64)
    return ModelInput(
        input_ids=np.asarray(token_ids, dtype=np.int64),
        positions=positions,
        slot_mapping=positions.copy(),
        block_tables=np.arange(-(-n // block_size), dtype=np.int32)[None, :],
        seq_lens=np.asarray([n], dtype=np.int32),
        query_start_loc=np.asarray([0, n], dtype=np.int32),
        max_query_len=n,
        max_seq_len=n,
        logits_indices=positions.copy() if all_logits else positions[-1:].copy(),
    )
