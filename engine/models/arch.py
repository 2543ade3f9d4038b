"""The Llama family's architecture: `LLAMA_PACKING`, the single declaration of which checkpoint linear
layers the forward fuses into one matmul, and `LlamaArch`, a checkpoint's dimensions and options
read from its HF config and the sizes they give those layers.

The model (`llama.py`) sizes its fused layers from the packing, the loader (`loader.py`)
concatenates checkpoint weights by it, and `LlamaArch.lora_spec` hands it to the adapters package,
which validates and places adapter weights by it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from loomlm.adapters.spec import LoRABaseSpec, PackedLinear

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")

# Fused layer -> its submodule and its parts in output-column order (HF / PEFT linear layer names).
LLAMA_PACKING = (
    PackedLinear("qkv_proj", "self_attn", ("q_proj", "k_proj", "v_proj")),
    PackedLinear("o_proj", "self_attn", ("o_proj",)),
    PackedLinear("gate_up_proj", "mlp", ("gate_proj", "up_proj")),
    PackedLinear("down_proj", "mlp", ("down_proj",)),
)


@dataclass(slots=True, frozen=True)
class LlamaArch:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool  # Qwen2 has q/k/v biases
    sliding_window: int | None
    packing: ClassVar[tuple[PackedLinear, ...]] = LLAMA_PACKING

    @classmethod
    def from_hf_config(cls, config: Any) -> LlamaArch:
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {model_type!r} is not supported; loomlm runs the Llama family "
                f"({', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        num_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // num_heads
        uses_window = getattr(config, "use_sliding_window", model_type == "mistral")
        window = getattr(config, "sliding_window", None) if uses_window else None
        return cls(
            model_type=model_type,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
            rms_norm_eps=config.rms_norm_eps,
            max_position_embeddings=config.max_position_embeddings,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(config, "attention_bias", model_type == "qwen2")),
            sliding_window=window,
        )

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each checkpoint linear layer of a decoder layer."""
        hidden, inter = self.hidden_size, self.intermediate_size
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "q_proj": (hidden, q_size),
            "k_proj": (hidden, kv_size),
            "v_proj": (hidden, kv_size),
            "o_proj": (q_size, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }

    def packed_dims(self, name: str) -> tuple[int, int]:
        """(in_features, out_features) of fused layer ``name``: its parts share the input and stack
        their outputs."""
        dims = self.linear_dims()
        parts = next(packed.parts for packed in self.packing if packed.name == name)
        return dims[parts[0]][0], sum(dims[part][1] for part in parts)

    def lora_spec(self) -> LoRABaseSpec:
        """What LoRA adapters for this checkpoint are validated against."""
        return LoRABaseSpec(
            self.model_type, self.num_layers, self.hidden_size, self.packing, self.linear_dims()
        )

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        element = torch.tensor([], dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element


def rope_inv_freq(config: Any, head_dim: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and the cos/sin scale for the config's RoPE variant. Scaled variants
    (llama3, linear, yarn, ...) use transformers' own initialisers so the numbers match exactly."""
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        return inv_freq, 1.0
    if rope_type == "dynamic":
        raise ValueError("dynamic NTK RoPE scaling is not supported (its frequencies change per length)")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"unknown rope_type {rope_type!r} in the model config")
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float(), float(attention_scaling)
