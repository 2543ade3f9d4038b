"""Which GEMM runs the float32 and bfloat16 linear layers on the CPU, chosen per machine when a
rank loads.

Candidates (`loomlm.kernels.cpu_gemm`): ``torch.mm`` on the ``[in, out]`` weight (MKL), oneDNN's
linear on a weight prepacked into its blocked layout (``torch.ops.mkldnn``: what torch.compile's CPU
weight freezing uses), and for float32 loomlm's AVX2 GEMM on panels of 16 columns. On an AVX2 Zen 3
oneDNN ran the model's shapes 1.5-2.4x faster than torch.mm, and loomlm's panels 1.3x faster than
oneDNN at 64 rows (bench/linear_kernels.py); other CPUs differ, so each distinct layer shape is
timed at a decode-sized and a batch-sized row count and the fastest kernel kept. The packed copy
replaces the float weight (no memory doubles)."""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from loomlm.engine.models.llama import Linear, LlamaMLP
from loomlm.engine.probe import median_ratios_interleaved
from loomlm.kernels.cpu_gemm import (
    KERNELS,
    onednn_available,
    pack_weight,
    packed_linear,
    panel_gemm_available,
)

logger = logging.getLogger(__name__)
_PROBE_ROWS = (1, 64)  # a batch-1 and a batched decode step (prefill sizes tie at the GEMM roof)
_PROBE_ROUNDS = 7
_MIN_SPEEDUP = 1.1  # keep torch.mm unless a packed kernel is clearly faster: noise must not flip a choice


def candidate_kernels(dtype: torch.dtype) -> tuple[str, ...]:
    """The kernels of `cpu_gemm.KERNELS` this install and CPU can run for ``dtype``, torch.mm first."""
    runs = {"torch.mm": True, "onednn": onednn_available()}
    runs["loomlm"] = dtype == torch.float32 and panel_gemm_available()
    return tuple(kernel for kernel in KERNELS if runs[kernel])


def choose_linear_kernels(
    model: nn.Module, device: torch.device, dtype: torch.dtype
) -> dict[tuple[int, int], str]:
    """Time every candidate kernel per distinct ``(in, out)`` of the model's `Linear` layers (float32
    or bfloat16) and switch the layers to the fastest. Returns the choice per shape (empty off the
    CPU, for other dtypes, or where torch.mm is the only candidate)."""
    kernels = candidate_kernels(dtype)
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or len(kernels) == 1:
        return {}
    by_shape: dict[tuple[int, int], list[Linear]] = {}
    for module in model.modules():
        if isinstance(module, Linear):
            by_shape.setdefault(tuple(module.weight_t.shape), []).append(module)
    choices = {}
    for shape, layers in by_shape.items():
        sample = layers[0]
        packs = {kernel: pack_weight(sample.weight_t, kernel) for kernel in kernels if kernel != "torch.mm"}
        relative = _relative_times(sample, kernels, packs, dtype)
        best = min(packs, key=relative.__getitem__)
        choices[shape] = best if relative[best] * _MIN_SPEEDUP < relative["torch.mm"] else "torch.mm"
        if choices[shape] != "torch.mm":
            for layer in layers:
                packed = packs[best] if layer is sample else pack_weight(layer.weight_t, best)
                layer.use_packed(packed, best)
    logger.info("linear kernels: %s", ", ".join(f"{i}x{o} {k}" for (i, o), k in choices.items()))
    return choices


def fuse_gate_up_activations(model: nn.Module) -> int:
    """Fuse SiLU·mul into every gate_up projection that runs loomlm's float32 or bf16 panels
    (`LlamaMLP.fuse_gate_up`: the same arithmetic, less memory traffic, so no timing decides it). For
    models without LoRA. Returns how many MLPs were fused."""
    mlps = [
        module
        for module in model.modules()
        if isinstance(module, LlamaMLP)
        and module.gate_up_silu_mul is None
        and module.gate_up_proj.can_fuse_silu_mul
    ]
    for mlp in mlps:
        mlp.fuse_gate_up()
    return len(mlps)


def _relative_times(
    layer: Linear, kernels: tuple[str, ...], packs: dict[str, torch.Tensor], dtype: torch.dtype
) -> dict[str, float]:
    """Each kernel's time on ``layer`` over the probe row counts, relative to torch.mm's in the same
    round: the median over interleaved rounds (every kernel once a round), so a slow stretch of a
    shared machine, which slows the whole round, cancels out."""
    in_features, out_features = layer.weight_t.shape
    fns = {"torch.mm": layer.plain_forward}
    for kernel, packed in packs.items():
        fns[kernel] = functools.partial(
            packed_linear, kernel, packed=packed, bias=layer.bias, out_features=out_features
        )
    inputs = [torch.randn(rows, in_features, dtype=dtype) for rows in _PROBE_ROWS]
    calls = [(lambda fn=fns[kernel]: [fn(x) for x in inputs]) for kernel in kernels]
    with torch.inference_mode():
        relative = median_ratios_interleaved(calls, repeats=_PROBE_ROUNDS)
    return dict(zip(kernels, relative, strict=True))
