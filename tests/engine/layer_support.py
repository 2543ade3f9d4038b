"""A float `Linear` with seeded random weights, for the kernel and quantization tests."""

import torch

from loomlm.engine.models.llama import Linear


def float_layer(in_features=64, out_features=48, bias=False, seed=0) -> Linear:
    torch.manual_seed(seed)
    layer = Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight_t.normal_(0, 0.05)
        if bias:
            layer.bias.normal_(0, 0.1)
    return layer
