"""Our Llama-family forward (Llama, Mistral, Qwen2, SmolLM) over a flat batch of tokens.

q/k/v and gate/up are packed into single matmuls as `loomlm.engine.models.arch.LLAMA_PACKING`
declares (the fused layers are sized from it via `LlamaArch.packed_dims`; the forward splits their
outputs in its order); logits are computed only for the rows that sample. The math follows Hugging
Face's LlamaForCausalLM so greedy outputs match it token for token.

Under tensor parallelism each rank builds the model from the whole architecture and its `TPGroup`:
its layers take the sizes `TPShard.local_arch` gives, o/down sum their partial outputs with one
all-reduce each, and the embedding and LM head hold a slice of the vocabulary
(`parallel_layers.py`). With one rank every collective is a no-op."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from loomlm.adapters.layers import LoRAStep
from loomlm.engine.models.arch import LlamaArch
from loomlm.engine.models.attention import AttentionMetadata, PagedAttention
from loomlm.engine.models.parallel_layers import VocabParallelEmbedding
from loomlm.engine.parallel.group import TPGroup
from loomlm.engine.parallel.shard import TPShard
from loomlm.kernels.cpu_gemm import gate_up_silu_mul, pack_gate_up, packed_linear, unpack_panels
from loomlm.kernels.cpu_ops import rms_norm, rotary_store_kv, silu_mul


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The norm of ``x``; with ``residual``: ``residual += x`` in place, and its norm (the
        residual add before each pre-norm, folded in: one op instead of two on the CPU)."""
        # float32: the C++ op on the CPU, else torch's fused op (HF's formula bit for bit). Other
        # dtypes follow HF exactly (normalise in float32, scale after casting back).
        if x.dtype == torch.float32:
            return rms_norm(x, residual, self.weight, self.eps)
        if residual is not None:
            x = residual.add_(x)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Linear(nn.Module):
    """``x @ W^T + b`` with W stored transposed, ``weight_t`` ``[in, out]`` contiguous. For the few
    rows of a decode step MKL streams a DRAM-resident weight ~1.5x faster in this layout than in
    nn.Linear's ``[out, in]`` (measured on this project's CPU), and no slower for large batches.
    Where a packed kernel measures faster (oneDNN's prepacked GEMM or loomlm's AVX2 panels:
    `linear_kernels.choose_linear_kernels`) the layer runs that instead, on a packed copy that
    replaces ``weight_t``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.packed: torch.Tensor | None = None
        self.kernel = "torch.mm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [num_tokens, in_features]
        if self.packed is not None:
            return packed_linear(self.kernel, x, self.packed, self.bias, self.weight_t.shape[1])
        return self.plain_forward(x)

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.mm(x, self.weight_t)
        return torch.addmm(self.bias, x, self.weight_t)

    def use_packed(self, packed: torch.Tensor, kernel: str = "onednn") -> None:
        """Run ``kernel`` (`cpu_gemm.KERNELS`) on ``packed`` (its `cpu_gemm.pack_weight` layout) from
        now on; the ``[in, out]`` copy is released (a one-element stand-in keeps its shape, for
        whoever sizes things by it)."""
        self.packed, self.kernel = packed, kernel
        shape = self.weight_t.shape
        self.weight_t = nn.Parameter(torch.zeros(1).expand(shape), requires_grad=False)

    @property
    def can_fuse_silu_mul(self) -> bool:
        """Whether this layer, as an MLP's gate_up projection, can run fused with SiLU·mul."""
        return self.kernel == "loomlm" and self.bias is None

    def fused_with_silu_mul(self) -> GateUpSiluMul:
        """This gate_up projection and SiLU·mul as one GEMM (see `can_fuse_silu_mul`)."""
        if not self.can_fuse_silu_mul:
            raise ValueError("only a bias-free gate_up_proj on loomlm's panels fuses with SiLU·mul")
        weight_t = unpack_panels(self.packed, self.weight_t.shape[1])
        return GateUpSiluMul(gate_up_silu_mul, pack_gate_up(weight_t), weight_t.shape[1] // 2)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for every position, computed once; a step looks them up once for all layers."""

    def __init__(self, inv_freq: torch.Tensor, scaling: float, max_positions: int) -> None:
        super().__init__()
        freqs = torch.arange(max_positions, dtype=torch.float)[:, None] * inv_freq[None, :]
        table = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", table.cos() * scaling, persistent=False)
        self.register_buffer("sin", table.sin() * scaling, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``[T, head_dim]`` cos and sin for the step's positions."""
        return self.cos[positions].to(dtype), self.sin[positions].to(dtype)


class LlamaAttention(nn.Module):
    def __init__(self, arch: LlamaArch, layer_idx: int = 0, tp: TPGroup | None = None) -> None:
        """``arch``: this rank's dimensions (`TPShard.local_arch`; the whole model's on one rank)."""
        super().__init__()
        self.layer_idx = layer_idx  # which LoRA weights apply
        self.tp = tp or TPGroup.single()
        self.num_heads = arch.num_heads
        self.num_kv_heads = arch.num_kv_heads
        self.head_dim = arch.head_dim
        self.q_size = arch.num_heads * arch.head_dim
        self.kv_size = arch.num_kv_heads * arch.head_dim
        self.qkv_proj = Linear(*arch.packed_dims("qkv_proj"), bias=arch.attention_bias)
        self.o_proj = Linear(*arch.packed_dims("o_proj"))
        self.attn = PagedAttention(arch.num_heads, arch.num_kv_heads, arch.head_dim)

    def forward(
        self,
        rope: tuple[torch.Tensor, torch.Tensor],
        hidden: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        metadata: AttentionMetadata,
        lora: LoRAStep | None = None,
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        qkv = self.qkv_proj(hidden)
        if lora is not None:  # adapter updates go into the packed output's q/k/v column windows
            lora.apply(self.layer_idx, "qkv_proj", hidden, qkv)
        # q and k heads sit side by side in the packed output: rotated in place in one pass, then
        # k and v written to the cache (one C++ op on the CPU).
        rotary_store_kv(qkv, *rope, self.num_heads, self.num_kv_heads, metadata.slot_mapping, *kv_cache)
        q = qkv.view(num_tokens, -1, self.head_dim)[:, : self.num_heads]
        out = self.attn(q, kv_cache, metadata).reshape(num_tokens, self.q_size)
        if lora is None:
            return self.tp.all_reduce(self.o_proj(out))
        # Row-parallel: each rank's LoRA update is a partial sum too (see TPShard), summed with the base.
        return self.tp.all_reduce(lora.apply(self.layer_idx, "o_proj", out, self.o_proj(out)))


class GateUpSiluMul(nn.Module):
    """The gate_up projection and SiLU-and-multiply as one GEMM on a repacked weight: what an MLP runs
    once `LlamaMLP.fuse_gate_up` has swapped its gate_up projection for its layer's
    ``fused_with_silu_mul()``. ``kernel(x, packed, intermediate_size)`` computes it
    (`cpu_gemm.gate_up_silu_mul`, or `cpu_gemm_bf16.bf16_gate_up_silu_mul` on bf16 weights)."""

    def __init__(
        self,
        kernel: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
        packed: torch.Tensor,
        intermediate_size: int,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.packed = packed
        self.intermediate_size = intermediate_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel(x, self.packed, self.intermediate_size)


class LlamaMLP(nn.Module):
    def __init__(self, arch: LlamaArch, layer_idx: int = 0, tp: TPGroup | None = None) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.tp = tp or TPGroup.single()
        self.intermediate_size = arch.intermediate_size
        self.gate_up_proj = Linear(*arch.packed_dims("gate_up_proj"))
        self.down_proj = Linear(*arch.packed_dims("down_proj"))
        self.gate_up_silu_mul: GateUpSiluMul | None = None

    def fuse_gate_up(self) -> None:
        """Run gate_up and SiLU·mul as one GEMM from now on: the same sums, without writing and
        re-reading the 2I-wide product. Only where the layer can (``can_fuse_silu_mul``: a bias-free
        layer on loomlm's float32 or bf16 panels), and only without LoRA (adapters add into the
        product before the activation): gate_up_proj is gone."""
        self.gate_up_silu_mul = self.gate_up_proj.fused_with_silu_mul()
        del self.gate_up_proj

    def forward(self, x: torch.Tensor, lora: LoRAStep | None = None) -> torch.Tensor:
        if self.gate_up_silu_mul is not None:
            if lora is not None:  # fuse_gate_up is only called with LoRA off
                raise RuntimeError("an MLP with gate_up fused into SiLU·mul cannot apply LoRA")
            return self.tp.all_reduce(self.down_proj(self.gate_up_silu_mul(x)))
        if lora is None:
            return self.tp.all_reduce(self.down_proj(silu_mul(self.gate_up_proj(x))))
        hidden = silu_mul(lora.apply(self.layer_idx, "gate_up_proj", x, self.gate_up_proj(x)))
        return self.tp.all_reduce(lora.apply(self.layer_idx, "down_proj", hidden, self.down_proj(hidden)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, arch: LlamaArch, layer_idx: int = 0, tp: TPGroup | None = None) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(arch, layer_idx, tp)
        self.mlp = LlamaMLP(arch, layer_idx, tp)
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)

    def forward(
        self,
        rope: tuple[torch.Tensor, torch.Tensor],
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        metadata: AttentionMetadata,
        lora: LoRAStep | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(this layer's MLP output, the residual stream before it). ``residual``: the stream before
        ``hidden`` (the previous layer's MLP output) is added; None at the first layer, whose
        ``hidden`` (the embeddings) starts the stream. Each residual add is folded into the norm."""
        if residual is None:
            residual, normed = hidden, self.input_layernorm(hidden)
        else:
            normed = self.input_layernorm(hidden, residual)
        attn = self.self_attn(rope, normed, kv_cache, metadata, lora)
        return self.mlp(self.post_attention_layernorm(attn, residual), lora), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, arch: LlamaArch, rotary: RotaryEmbedding, tp: TPGroup | None = None) -> None:
        """``arch``: the whole model's; ``tp``: this rank's group (None: one rank)."""
        super().__init__()
        self.arch = arch
        self.tp = tp = tp or TPGroup.single()
        shard = TPShard(arch, tp.rank, tp.world_size)
        self.local_arch = local = shard.local_arch()  # this rank's sizes (KV heads, vocab slice)
        self.embed_tokens = VocabParallelEmbedding(local.vocab_size, arch.hidden_size, shard.vocab_start, tp)
        self.rotary = rotary
        self.layers = nn.ModuleList(LlamaDecoderLayer(local, i, tp) for i in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        # Tied checkpoints still get their own (transposed) copy: the embedding lookup wants rows,
        # the LM head wants the fast matmul layout.
        self.lm_head = Linear(arch.hidden_size, local.vocab_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        metadata: AttentionMetadata,
        lora: LoRAStep | None = None,
    ) -> torch.Tensor:
        """``lora``: this step's adapter updates; None when no token of the step has an adapter."""
        hidden, residual = self.embed_tokens(input_ids), None
        rope = self.rotary(positions, hidden.dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(rope, hidden, residual, kv_cache, metadata, lora)
        return hidden if residual is None else residual.add_(hidden)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Final norm and LM head, for the sampling rows only: ``[rows, vocab]`` on rank 0, None on
        the others (each computes its vocabulary slice; rank 0 gathers them)."""
        logits = self.tp.gather_to_first(self.lm_head(self.norm(hidden)))
        if logits is None or logits.shape[-1] == self.arch.vocab_size:
            return logits
        return logits[:, : self.arch.vocab_size]  # the padding of the last rank's slice
