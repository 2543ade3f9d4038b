"""Weight quantization of the model's linear layers (``LLM(quantization="int8")``), CPU only.

``int8``: each output channel's weights are scaled to int8 symmetrically (per-channel scales); a
step's activations are quantized on the fly (one scale per matrix, dynamic) and the int8 product
runs in fbgemm/oneDNN's x86 kernel (``torch.ops.quantized.linear_dynamic``) with a float32 result.
Chosen by measurement on SmolLM2's shapes (bench/RESULTS.md, quantization): 2.5-18x faster than the
float32 matmul at 1, 8 and 64 rows, where torch's weight-only int8 and int4 CPU kernels were slower
than float32. On a CPU without VNNI the activations use 7 bits (``reduce_range``) so the kernel's
16-bit intermediate sums cannot saturate.

Every linear layer the forward runs is replaced (q/k/v, o, gate/up, down, LM head); embeddings and
norms stay float32, and so do LoRA adapters, which add their update to the quantized layer's output
as to any other."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn

from loomlm.engine.models.llama import Linear

QUANTIZATION_MODES = ("int8",)


class Int8DynamicLinear(nn.Module):
    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool) -> None:
        """``weight_t``: the float layer's ``[in, out]`` weight."""
        super().__init__()
        weight = weight_t.detach().t().float().contiguous()  # [out, in]
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():
            # torch marks its quantized tensor type deprecated; the x86 kernel that reads it is not.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(
            qweight, None if bias is None else bias.detach().float()
        )
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.reduce_range = reduce_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [num_tokens, in_features] float32
        return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)

    def dequantized_weight_t(self) -> torch.Tensor:
        """The ``[in, out]`` float32 weight the int8 values and scales stand for (tests compare)."""
        qweight, _ = torch.ops.quantized.linear_unpack(self.packed)
        return qweight.dequantize().t().contiguous()


def quantize_model(model: nn.Module, mode: str) -> int:
    """Replace every `Linear` of ``model`` by its ``mode`` version, in place; returns how many."""
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES} or None, got {mode!r}")
    reduce_range = not cpu_has_vnni()
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8DynamicLinear(module.weight_t, module.bias, reduce_range))
    return len(targets)


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether the CPU has the VNNI int8 dot product (AVX512_VNNI or AVX_VNNI); read once."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags
