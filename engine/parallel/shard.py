"""TPShard: how one rank's share of a Llama-family model is cut, declared once for the base weights
and for LoRA adapters.

Megatron's split: q/k/v and gate/up are column-parallel (each rank holds whole heads, or a slice of
the MLP's intermediate features, of the output), o and down are row-parallel (the matching slice of
their input; the partial outputs are summed by one all-reduce each). The embedding and LM head are
split by vocabulary rows, padded to a multiple of the group size. Norms are replicated.

KV heads split with the query heads that read them; with more ranks than KV heads each rank holds
the one KV head its query heads use (replicated across the ranks that share it).

LoRA (S-LoRA / punica): on a column-parallel layer A is whole and B is cut like the base's output;
on a row-parallel layer A is cut like the base's input and B is whole, so each rank's
``x_r A_r^T B^T`` is a partial sum that the base layer's own all-reduce completes. No extra
collective."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from loomlm.adapters.peft_loader import LoRAAdapter
from loomlm.engine.models.arch import LlamaArch

COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_PARALLEL = ("o_proj", "down_proj")


@dataclass(slots=True, frozen=True)
class ModuleSplit:
    """One rank's slice of a checkpoint linear layer: of its output features (column-parallel) or
    of its input features (row-parallel)."""

    splits_output: bool
    start: int
    end: int


@dataclass(slots=True, frozen=True)
class TPShard:
    arch: LlamaArch  # the whole model's
    rank: int
    world_size: int

    def __post_init__(self) -> None:
        n, arch = self.world_size, self.arch
        if n < 1 or not 0 <= self.rank < n:
            raise ValueError(f"rank {self.rank} is outside a tensor-parallel group of {n}")
        if arch.num_heads % n:
            raise ValueError(
                f"tensor_parallel_size={n} must divide num_attention_heads={arch.num_heads}; "
                "choose a divisor of it"
            )
        if arch.num_kv_heads % n and n % arch.num_kv_heads:
            raise ValueError(
                f"tensor_parallel_size={n} must divide num_key_value_heads={arch.num_kv_heads} or be a "
                "multiple of it (then KV heads are replicated)"
            )
        if arch.intermediate_size % n:
            raise ValueError(
                f"tensor_parallel_size={n} must divide intermediate_size={arch.intermediate_size}"
            )

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def num_heads(self) -> int:
        return self.arch.num_heads // self.world_size

    @property
    def num_kv_heads(self) -> int:
        return max(1, self.arch.num_kv_heads // self.world_size)

    @property
    def kv_head_start(self) -> int:
        # Query head h reads KV head h // group; this rank's first query head is rank * num_heads.
        group = self.arch.num_heads // self.arch.num_kv_heads
        return self.rank * self.num_heads // group

    @property
    def vocab_per_rank(self) -> int:
        return -(-self.arch.vocab_size // self.world_size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_per_rank

    def local_arch(self) -> LlamaArch:
        """The dimensions this rank's modules have (heads, intermediate features, vocabulary rows);
        the model, its KV cache and its LoRA slots are sized from it."""
        return replace(
            self.arch,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            intermediate_size=self.arch.intermediate_size // self.world_size,
            vocab_size=self.vocab_per_rank,
        )

    def module_split(self, module: str) -> ModuleSplit:
        """This rank's slice of checkpoint linear layer ``module`` (a key of ``linear_dims``)."""
        head_dim, inter = self.arch.head_dim, self.arch.intermediate_size // self.world_size
        q_start = self.rank * self.num_heads * head_dim
        q = (q_start, q_start + self.num_heads * head_dim)
        kv_start = self.kv_head_start * head_dim
        mlp = (self.rank * inter, (self.rank + 1) * inter)
        ranges = {"q_proj": q, "k_proj": (kv_start, kv_start + self.num_kv_heads * head_dim), "o_proj": q}
        ranges["v_proj"] = ranges["k_proj"]
        for name in ("gate_proj", "up_proj", "down_proj"):
            ranges[name] = mlp
        if module not in ranges:
            raise ValueError(f"no tensor-parallel split for module {module!r}")
        return ModuleSplit(module in COLUMN_PARALLEL, *ranges[module])

    # -- slicing --------------------------------------------------------------------------------
    def slice_linear(self, module: str, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's part of a checkpoint weight ``[out, in]`` or bias ``[out]`` of ``module``."""
        split = self.module_split(module)
        if split.splits_output:
            return tensor[split.start : split.end]
        if tensor.dim() == 1:  # a row-parallel bias is added once, after the all-reduce: not here
            raise ValueError(f"row-parallel {module} has a bias; the model family declares none")
        return tensor[:, split.start : split.end]

    def slice_vocab(self, weight: torch.Tensor) -> torch.Tensor:
        """This rank's rows of an embedding or LM head ``[vocab, hidden]``, zero-padded at the end."""
        part = weight[self.vocab_start : self.vocab_start + self.vocab_per_rank]
        if part.shape[0] == self.vocab_per_rank:
            return part
        padded = weight.new_zeros(self.vocab_per_rank, weight.shape[1])
        padded[: part.shape[0]] = part
        return padded

    def shard_adapter(self, adapter: LoRAAdapter) -> LoRAAdapter:
        """The adapter's weights for this rank (see the module docstring)."""
        if self.world_size == 1:
            return adapter
        weights = {}
        for (layer, module), (a, b) in adapter.weights.items():
            split = self.module_split(module)
            if split.splits_output:
                weights[layer, module] = (a, b[split.start : split.end].contiguous())
            else:
                weights[layer, module] = (a[:, split.start : split.end].contiguous(), b)
        return replace(adapter, weights=weights)
