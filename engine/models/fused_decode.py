"""FusedDecode: the decoder layers of an all-decode step in one C++ call (`loomlm._C.DecodeStack`),
for a model whose linear layers are quantized (``quantization="int4"`` / ``"q8_0"`` blocks,
``"int8"``, or ``"bf16"`` on loomlm's bf16 panels, gate_up fused with SiLU·mul or not) on one CPU
rank. At batch 1 the per-layer Python around the kernels (module calls,
dispatch checks, views: about 40 calls a layer) cost as much as the kernels themselves; the stack
runs the same ops in the same order from C++, without the GIL.

Steps with adapters run in the stack too when every slot of the step takes the C++ LoRA path
(`adapters/cpu_native.py`, where the extension is built): the stack adds each fused layer's update
after its product, where the module path does. Steps with a prefill chunk (torch's SDPA), adapter
slots on the grouped torch path, or tensor parallelism (collectives between layers) take the module
path, which stays the reference the stack is tested against."""

from __future__ import annotations

import torch
from torch import nn

from loomlm.adapters.cpu_step import CPULoRAStep
from loomlm.engine.models.attention import AttentionMetadata
from loomlm.engine.models.bf16_weights import Bf16Linear
from loomlm.engine.models.block_quant import BlockQuantLinear
from loomlm.engine.models.llama import GateUpSiluMul
from loomlm.engine.models.quantized import Int8Linear
from loomlm.kernels.cpu_gemm_bf16 import bf16_gate_up_silu_mul
from loomlm.kernels.cpu_ops import native_cache
from loomlm.kernels.native import _C

# The stack's four fused linear layers, in its order (`_linears` gives a decoder layer's modules).
_LINEAR_NAMES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
_EMPTY = torch.empty(0)
_NO_LORA = (_EMPTY,) * 5  # a fused layer without adapters in the step (decode_stack.h: kLoRATensors)


class FusedDecode:
    def __init__(self, model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not self.supports(model, kv_caches):
            raise ValueError(
                "the fused decode stack needs packed-block linear layers on one CPU float32 rank"
            )
        self.model = model
        layers = []
        for layer in model.layers:
            tensors = [layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()]
            for linear in _linears(layer):
                tensors += _linear_tensors(linear)
                if linear is layer.self_attn.qkv_proj:
                    tensors.append(_EMPTY if linear.bias is None else linear.bias)
            layers.append(tensors)
        attn = model.layers[0].self_attn
        self._stack = _C.DecodeStack(
            layers,
            [key for key, _ in kv_caches],
            [value for _, value in kv_caches],
            attn.num_heads,
            attn.num_kv_heads,
            model.layers[0].input_layernorm.eps,
            attn.attn.scale,
        )

    @staticmethod
    def supports(model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
        """Whether the stack can run ``model``: int8 layers, packed blocks whose inputs need no padding,
        or bias-free bf16 layers on loomlm's panels (qkv may have a bias), one rank, contiguous
        float32 or bfloat16 caches on the CPU (`native_cache`), and the extension built."""
        if _C is None or model.tp.world_size != 1 or not kv_caches:
            return False
        key = kv_caches[0][0]
        if key.device.type != "cpu" or not native_cache(key):
            return False
        return all(_stack_runs(layer, m) for layer in model.layers for m in _linears(layer))

    @staticmethod
    def applies(metadata: AttentionMetadata, num_tokens: int, lora: object | None) -> bool:
        """Whether this step is all decode (one query token per sequence) and its adapters, if any,
        all run the C++ LoRA path."""
        if not (metadata.max_query_len == 1 and num_tokens == metadata.seq_lens.shape[0] > 0):
            return False
        return lora is None or (isinstance(lora, CPULoRAStep) and lora.all_native())

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        metadata: AttentionMetadata,
        lora: CPULoRAStep | None = None,
    ) -> torch.Tensor:
        """What `LlamaForCausalLM.forward` returns for this step (the final norm's input)."""
        hidden = self.model.embed_tokens(input_ids).contiguous()
        cos, sin = self.model.rotary(positions, hidden.dtype)
        return self._stack.run(
            hidden,
            cos.contiguous(),
            sin.contiguous(),
            metadata.slot_mapping.to(torch.int64).contiguous(),
            metadata.block_tables.to(torch.int32).contiguous(),
            metadata.seq_lens.to(torch.int32).contiguous(),
            [] if lora is None else _lora_tensors(lora),
            lora is not None and lora.int8_activations,
        )


def _linears(layer: nn.Module) -> list[nn.Module]:
    """A decoder layer's modules for `_LINEAR_NAMES` (gate_up: its fused form where fused with SiLU·mul)."""
    mlp = layer.mlp
    gate_up = mlp.gate_up_silu_mul if mlp.gate_up_silu_mul is not None else mlp.gate_up_proj
    return [layer.self_attn.qkv_proj, layer.self_attn.o_proj, gate_up, mlp.down_proj]


def _stack_runs(layer: nn.Module, linear: nn.Module) -> bool:
    if isinstance(linear, Int8Linear):
        return True
    if isinstance(linear, BlockQuantLinear):
        return linear.packed.padded_in_features == linear.in_features
    if isinstance(linear, Bf16Linear):
        return linear.kernel == "loomlm" and (linear.bias is None or linear is layer.self_attn.qkv_proj)
    return isinstance(linear, GateUpSiluMul) and linear.kernel is bf16_gate_up_silu_mul


def _linear_tensors(linear: nn.Module) -> list[torch.Tensor]:
    """One linear layer's three tensors in the stack's layout (csrc/decode_stack.h)."""
    if isinstance(linear, Int8Linear):
        return [linear.qweight, linear.w_scale, _EMPTY if linear.inv_smooth is None else linear.inv_smooth]
    if isinstance(linear, Bf16Linear):
        return [linear.weight, _EMPTY, torch.tensor([linear.out_features, 0])]
    if isinstance(linear, GateUpSiluMul):
        return [linear.packed, _EMPTY, torch.tensor([linear.intermediate_size, 1])]
    packed = linear.packed
    return [packed.qs, packed.scales, _EMPTY if packed.mins is None else packed.mins]


def _lora_tensors(lora: CPULoRAStep) -> list[torch.Tensor]:
    """The stack's ``lora`` argument: per fused layer, its rows, scales and step plan (or five empties)."""
    tensors = []
    for name in _LINEAR_NAMES:
        plan = lora.plans.get(name)
        native = None if plan is None else plan.native
        if native is None:
            tensors += _NO_LORA
        else:
            rows, scales = plan.group.native_tensors()
            scales = _EMPTY if scales is None else scales
            tensors += [rows, scales, native.token_ids, native.starts, native.info]
    return tensors
