"""ModelRunner: runs the model on one step's `ModelInput` over its paged KV cache and returns logits
for the rows that sample.

One runner per rank: in the engine process (`UniProcExecutor`) or in a worker process
(`MultiProcExecutor`). It owns the device side: this rank's KV cache (its KV heads), its LoRA slot
weights, the uploads of the step's arrays and the forward."""

from __future__ import annotations

import numpy as np
import torch

from loomlm.adapters.layers import LoRAModelWeights
from loomlm.adapters.metadata import LoRABatchMetadataBuilder
from loomlm.engine.models.attention import AttentionMetadata
from loomlm.engine.models.fused_decode import FusedDecode
from loomlm.engine.models.llama import LlamaForCausalLM
from loomlm.engine.outputs import ModelInput
from loomlm.kernels import AttentionWorkspace


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        *,
        num_blocks: int,
        block_size: int,
        max_num_batched_tokens: int,
        dtype: torch.dtype = torch.float32,
        cache_dtype: torch.dtype | None = None,  # None: dtype
        device: str | torch.device = "cpu",
        lora_weights: LoRAModelWeights | None = None,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.device = torch.device(device)
        local = model.local_arch
        cache_shape = (num_blocks, block_size, local.num_kv_heads, local.head_dim)
        cache_options = {"dtype": cache_dtype or dtype, "device": self.device}
        self.kv_caches = [
            (torch.zeros(cache_shape, **cache_options), torch.zeros(cache_shape, **cache_options))
            for _ in range(local.num_layers)
        ]
        self._workspace = AttentionWorkspace()
        # The decoder stack of all-decode steps in one C++ call, where the model allows it.
        self.fused_decode: FusedDecode | None = None
        self.kernel_report = ""  # which kernels run the layers (set by build_runner; benchmarks print it)
        self.lora_weights = lora_weights
        self._lora_builder = (
            LoRABatchMetadataBuilder(max_num_batched_tokens, lora_weights.num_slots, self.device)
            if lora_weights is not None
            else None
        )

    def enable_fused_decode(self) -> bool:
        """Run all-decode steps without adapters through `FusedDecode` if the model supports it
        (packed-block linear layers on one CPU rank); returns whether it does."""
        if FusedDecode.supports(self.model, self.kv_caches):
            self.fused_decode = FusedDecode(self.model, self.kv_caches)
        return self.fused_decode is not None

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        # Reusing host buffers is safe: an upload from pageable host memory is done when it returns.
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def execute(self, model_input: ModelInput) -> torch.Tensor | None:
        """Logits ``[num_sampling_rows, vocab]`` (float32) in ``sampling_chunks`` order, on rank 0 of
        a tensor-parallel group (None on the other ranks)."""
        metadata = AttentionMetadata(
            slot_mapping=self._to_device(model_input.slot_mapping),
            block_tables=self._to_device(model_input.block_tables),
            seq_lens=self._to_device(model_input.seq_lens),
            query_start_loc=self._to_device(model_input.query_start_loc),
            max_query_len=model_input.max_query_len,
            max_seq_len=model_input.max_seq_len,
            workspace=self._workspace,
        )
        lora = None
        if model_input.token_slots is not None:
            if self._lora_builder is None or self.lora_weights is None:
                raise ValueError("a request has an adapter slot but the runner has no LoRA weights")
            lora = self.lora_weights.step(self._lora_builder.build(model_input.token_slots))
        input_ids, positions = self._to_device(model_input.input_ids), self._to_device(model_input.positions)
        if self.fused_decode is not None and FusedDecode.applies(metadata, input_ids.shape[0], lora):
            hidden = self.fused_decode.forward(input_ids, positions, metadata, lora)
        else:
            hidden = self.model(input_ids, positions, self.kv_caches, metadata, lora)
        logits = self.model.compute_logits(hidden[self._to_device(model_input.logits_indices)])
        return None if logits is None else logits.float()
