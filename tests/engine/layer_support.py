"""A float `Linear` with seeded random weights, and a tiny Llama architecture, for the kernel,
quantization and sharding tests."""

from dataclasses import replace

import torch

from loomlm.engine.models.arch import LlamaArch
from loomlm.engine.models.llama import Linear

TINY_ARCH = LlamaArch(
    model_type="llama",
    vocab_size=10,
    hidden_size=16,
    intermediate_size=24,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=4,
    rms_norm_eps=1e-5,
    max_position_embeddings=64,
    tie_word_embeddings=True,
    attention_bias=False,
    sliding_window=None,
)


def tiny_arch(**changes) -> LlamaArch:
    return replace(TINY_ARCH, **changes)


def float_layer(in_features=64, out_features=48, bias=False, seed=0) -> Linear:
    torch.manual_seed(seed)
    layer = Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight_t.normal_(0, 0.05)
        if bias:
            layer.bias.normal_(0, 0.1)
    return layer
