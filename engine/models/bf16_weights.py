"""bfloat16 linear weights under float32 activations (``LLM(quantization="bf16")``), CPU only.

Every `Linear` of the model, LM head included, keeps its weight in bfloat16 (half the bytes of
float32) in the layout of the kernel that runs it: loomlm's panels of bf16 pairs
(`loomlm.kernels.cpu_gemm_bf16`: ``vdpbf16ps``, float32 sums and result) or oneDNN's blocked layout
(its bf16 GEMM, AVX-512 BF16 or AMX, handing back bf16). A call rounds its float32 input to bfloat16;
the result is float32. Which kernel a layer shape runs is timed at load on this machine. Embeddings,
norms, rotary, attention and the KV cache stay float32, so loomlm's C++ ops for them run as in float32
mode, and LoRA adapters add to the layer's float32 output as on a float layer. Without adapters a
gate_up projection on loomlm's panels runs fused with SiLU·mul, and on loomlm's panels every decode
step can run in the fused C++ decode stack (`fused_decode.py`).

Why not the whole model in bfloat16 (``dtype="bfloat16"``): on a Zen 4 with AVX-512 BF16 the bf16
GEMMs ran 2-4x float32's at the model's shapes, but the rest of a step (norms, rotary, attention)
then runs torch's generic bf16 code, and batched decoding gained only 1.02-1.28x (bench/quant.py).
Only the matmuls gain from bf16 on a CPU; elementwise work converts to float32 inside anyway.

Without native bf16 instructions oneDNN emulates them (~300x slower than float32, measured on an
earlier machine): the engine then logs a warning and the kernel report says so."""

from __future__ import annotations

import logging

import torch
from torch import nn

from loomlm.engine.dtype_choice import native_bf16_flags
from loomlm.engine.models.llama import GateUpSiluMul, Linear
from loomlm.engine.probe import median_ratios_interleaved
from loomlm.kernels.cpu_gemm import onednn_available, pack_weight, packed_linear
from loomlm.kernels.cpu_gemm_bf16 import (
    bf16_gate_up_silu_mul,
    bf16_panel_linear,
    bf16_panels_available,
    pack_bf16_gate_up,
    pack_bf16_panels,
    unpack_bf16_panels,
)

logger = logging.getLogger(__name__)
BF16_KERNELS = ("loomlm", "onednn", "torch.mm")
_PROBE_ROWS = (1, 64)  # a batch-1 and a batched decode step
_PROBE_ROUNDS = 7
# loomlm's panels unless oneDNN is clearly faster: they also run the fused gate_up and decode stack.
_MIN_SPEEDUP = 1.1


def available_bf16_kernels() -> tuple[str, ...]:
    """The bf16 kernels this install and CPU can run, in order of preference."""
    runs = {"loomlm": bf16_panels_available(), "onednn": onednn_available(), "torch.mm": True}
    return tuple(kernel for kernel in BF16_KERNELS if runs[kernel])


class Bf16Linear(nn.Module):
    """``x @ W + b`` with ``W`` held in bfloat16 and ``x``, ``b`` and the result in float32."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor | None, kernel: str | None = None) -> None:
        """``weight_t``: the float layer's ``[in, out]`` weight (rounded to bfloat16 here); ``kernel``:
        one of `available_bf16_kernels` (default: the first)."""
        super().__init__()
        kernel = kernel or available_bf16_kernels()[0]
        if kernel not in available_bf16_kernels():
            raise ValueError(f"bf16 kernel {kernel!r} cannot run here; available: {available_bf16_kernels()}")
        self.in_features, self.out_features = weight_t.shape
        self.kernel = kernel
        weight_t = weight_t.detach().to(torch.bfloat16).contiguous()
        if kernel == "loomlm":
            self.weight = pack_bf16_panels(weight_t)
        elif kernel == "onednn":
            self.weight = pack_weight(weight_t, "onednn")
        else:
            self.weight = weight_t
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [num_tokens, in_features] float32
        if self.kernel == "loomlm":
            return bf16_panel_linear(x, self.weight, self.bias, self.out_features)
        x_bf16 = x.to(torch.bfloat16)
        if self.kernel == "onednn":
            product = packed_linear("onednn", x_bf16, self.weight, None, self.out_features)
        else:
            product = torch.mm(x_bf16, self.weight)
        out = product.float()
        return out if self.bias is None else out.add_(self.bias)

    @property
    def can_fuse_silu_mul(self) -> bool:
        """Whether this layer, as an MLP's gate_up projection, can run fused with SiLU·mul."""
        return self.kernel == "loomlm" and self.bias is None

    def fused_with_silu_mul(self) -> GateUpSiluMul:
        """This gate_up projection and SiLU·mul as one bf16 GEMM (see `can_fuse_silu_mul`)."""
        if not self.can_fuse_silu_mul:
            raise ValueError("only a bias-free bf16 gate_up on loomlm's panels fuses with SiLU·mul")
        packed = pack_bf16_gate_up(unpack_bf16_panels(self.weight, self.in_features, self.out_features))
        return GateUpSiluMul(bf16_gate_up_silu_mul, packed, self.out_features // 2)


def convert_to_bf16(model: nn.Module) -> str:
    """Replace every `Linear` of ``model`` by a `Bf16Linear` on the kernel measured fastest here for
    its shape, in place; returns the kernel report."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, Linear)]
    kernels = {shape: _fastest_kernel(shape) for shape in {tuple(m.weight_t.shape) for _, m in targets}}
    for name, module in targets:
        kernel = kernels[tuple(module.weight_t.shape)]
        model.set_submodule(name, Bf16Linear(module.weight_t, module.bias, kernel))
    chosen = ", ".join(f"{i}x{o} {kernel}" for (i, o), kernel in kernels.items())
    isas = native_bf16_flags()
    if isas:
        isa = "+".join(isas)
        return f"bf16: {len(targets)} linear layers, bf16 weights ({chosen}; {isa}), float32 activations"
    logger.warning(
        "quantization='bf16' on a CPU without AVX-512 BF16 or AMX: bf16 GEMMs are emulated here and "
        "can run far slower than float32; int8 is the faster mode on this CPU"
    )
    return f"bf16: {len(targets)} linear layers ({chosen}; emulated: no native bf16 on this CPU)"


def _fastest_kernel(shape: tuple[int, int]) -> str:
    """The bf16 kernel for an ``(in, out)`` layer here: the preferred one unless another measures
    `_MIN_SPEEDUP` faster (interleaved rounds on random weights, `_PROBE_ROWS` rows)."""
    kernels = available_bf16_kernels()[:2]
    # Without loomlm's panels this CPU has no AVX-512 BF16: oneDNN (or torch.mm) emulates bf16, a
    # probe would take minutes, and there is nothing to choose between.
    if kernels[0] != "loomlm" or len(kernels) == 1:
        return kernels[0]
    generator = torch.Generator().manual_seed(0)
    weight_t = torch.randn(shape, generator=generator)
    layers = [Bf16Linear(weight_t, None, kernel) for kernel in kernels]
    inputs = [torch.randn(rows, shape[0], generator=generator) for rows in _PROBE_ROWS]
    calls = [(lambda layer=layer: [layer(x) for x in inputs]) for layer in layers]
    with torch.inference_mode():
        relative = median_ratios_interleaved(calls, repeats=_PROBE_ROUNDS)
    return kernels[1] if relative[1] * _MIN_SPEEDUP < relative[0] else kernels[0]
