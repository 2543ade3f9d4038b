"""LoRABaseSpec: what an adapter is validated against, the base model's targetable linear layers and
their (in, out) sizes, plus how they pack into the forward's fused matmuls. Built by the engine from
its model architecture, so this package never imports the engine."""

from __future__ import annotations

from dataclasses import dataclass

# PEFT module name -> the submodule of a decoder layer that holds it.
MODULE_PARENTS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
# The forward's fused linear layers and the PEFT modules packed into each, in output-column order.
PACKED_GROUPS = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "o_proj": ("o_proj",),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "down_proj": ("down_proj",),
}


@dataclass(slots=True, frozen=True)
class LoRABaseSpec:
    model_type: str
    num_layers: int
    hidden_size: int
    module_dims: dict[str, tuple[int, int]]  # PEFT module name -> (in_features, out_features)

    @classmethod
    def for_llama(
        cls,
        *,
        model_type: str,
        num_layers: int,
        hidden_size: int,
        intermediate_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
    ) -> LoRABaseSpec:
        q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
        dims = {
            "q_proj": (hidden_size, q_size),
            "k_proj": (hidden_size, kv_size),
            "v_proj": (hidden_size, kv_size),
            "o_proj": (q_size, hidden_size),
            "gate_proj": (hidden_size, intermediate_size),
            "up_proj": (hidden_size, intermediate_size),
            "down_proj": (intermediate_size, hidden_size),
        }
        return cls(model_type, num_layers, hidden_size, dims)
