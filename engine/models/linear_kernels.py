"""Which GEMM runs the float32 and bfloat16 linear layers on the CPU, chosen per machine when a
rank loads.

Candidates: ``torch.mm`` on the ``[in, out]`` weight (MKL), and oneDNN's linear on a weight
prepacked into its blocked layout (``torch.ops.mkldnn``: what torch.compile's CPU weight freezing
uses). On this project's CPU oneDNN ran the model's shapes 1.5-2.4x faster (bench/profile_ops.py)
and decoding 1.6x (batch 1) to 2.2x (batch 32) faster with identical greedy tokens; other CPUs may
differ, so each distinct layer shape is timed at a decode-sized and a batch-sized row count and
the faster kernel kept. The prepacked copy replaces the float weight (no memory doubles)."""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from loomlm.engine.models.llama import Linear
from loomlm.engine.probe import median_seconds

logger = logging.getLogger(__name__)
_PROBE_ROWS = (1, 32)
_MIN_SPEEDUP = 1.1  # keep torch.mm unless oneDNN is clearly faster: noise must not flip a choice


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def choose_linear_kernels(
    model: nn.Module, device: torch.device, dtype: torch.dtype
) -> dict[tuple[int, int], str]:
    """Time both kernels per distinct ``(in, out)`` of the model's `Linear` layers (float32 or
    bfloat16) and switch the layers where oneDNN wins. Returns the choice per shape (empty off the
    CPU or for other dtypes)."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or not onednn_available():
        return {}
    by_shape: dict[tuple[int, int], list[Linear]] = {}
    for module in model.modules():
        if isinstance(module, Linear):
            by_shape.setdefault(tuple(module.weight_t.shape), []).append(module)
    choices = {}
    for shape, layers in by_shape.items():
        sample = layers[0]
        packed = pack_weight(sample.weight_t)
        dnn = functools.partial(onednn_linear, packed=packed, bias=sample.bias)
        mm_s = sum(_time(sample.plain_forward, shape[0], rows, dtype) for rows in _PROBE_ROWS)
        dnn_s = sum(_time(dnn, shape[0], rows, dtype) for rows in _PROBE_ROWS)
        choices[shape] = "onednn" if dnn_s * _MIN_SPEEDUP < mm_s else "torch.mm"
        if choices[shape] == "onednn":
            for layer in layers:
                layer.use_packed(pack_weight(layer.weight_t) if layer is not sample else packed)
    logger.info("linear kernels: %s", ", ".join(f"{i}x{o} {k}" for (i, o), k in choices.items()))
    return choices


def pack_weight(weight_t: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight_t.detach().t().contiguous(), None)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _time(fn, in_features: int, rows: int, dtype: torch.dtype) -> float:
    x = torch.randn(rows, in_features, dtype=dtype)
    with torch.inference_mode():
        return median_seconds(lambda: fn(x))
