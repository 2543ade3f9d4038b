"""bfloat16 linear weights under float32 activations (``LLM(quantization="bf16")``), CPU only.

Every `Linear` of the model, LM head included, keeps its weight in bfloat16, prepacked in oneDNN's
blocked layout (half the bytes of float32). A call rounds its float32 input to bfloat16, runs
oneDNN's bf16 GEMM (float32 sums: AVX-512 BF16 ``vdpbf16ps``, or AMX, where the CPU has them) and
widens the product back to float32. Embeddings, norms, rotary, attention and the KV cache stay
float32, so loomlm's C++ ops for them run as in float32 mode, and LoRA adapters add to the layer's
float32 output as on a float layer.

Why not the whole model in bfloat16 (``dtype="bfloat16"``): on a Zen 4 with AVX-512 BF16 the bf16
GEMMs ran 2-4x float32's at the model's shapes, but the rest of a step (norms, rotary, attention)
then runs torch's generic bf16 code, and batched decoding gained only 1.28x (bench/quant.py).
Only the matmuls gain from bf16 on a CPU; elementwise work converts to float32 inside anyway.

Without native bf16 instructions oneDNN emulates them (~300x slower than float32, measured on an
earlier machine): the engine then logs a warning and the kernel report says so."""

from __future__ import annotations

import logging

import torch
from torch import nn

from loomlm.engine.dtype_choice import cpu_flags
from loomlm.engine.models.llama import Linear
from loomlm.kernels.cpu_gemm import onednn_available

logger = logging.getLogger(__name__)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_native() -> bool:
    """Whether this CPU has a bfloat16 dot-product instruction (AVX-512 BF16 or AMX)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


class Bf16Linear(nn.Module):
    """``x @ W + b`` with ``W`` held in bfloat16 and ``x``, ``b`` and the result in float32."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor | None) -> None:
        """``weight_t``: the float layer's ``[in, out]`` weight (rounded to bfloat16 here)."""
        super().__init__()
        self.in_features, self.out_features = weight_t.shape
        weight = weight_t.detach().to(torch.bfloat16)
        self.onednn = onednn_available()
        # oneDNN's packed layout where torch has it; else the [in, out] weight for torch.mm.
        self.weight = (
            torch.ops.mkldnn._reorder_linear_weight(weight.t().contiguous(), None)
            if self.onednn
            else weight.contiguous()
        )
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [num_tokens, in_features] float32
        x_bf16 = x.to(torch.bfloat16)
        if self.onednn:
            product = torch.ops.mkldnn._linear_pointwise(x_bf16, self.weight, None, "none", [], "")
        else:
            product = torch.mm(x_bf16, self.weight)
        out = product.float()
        return out if self.bias is None else out.add_(self.bias)


def convert_to_bf16(model: nn.Module) -> str:
    """Replace every `Linear` of ``model`` by a `Bf16Linear`, in place; returns the kernel report."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Bf16Linear(module.weight_t, module.bias))
    gemm = "oneDNN bf16 GEMM" if onednn_available() else "torch.mm bf16"
    if bf16_native():
        isa = "+".join(flag for flag in BF16_FLAGS if flag in cpu_flags())
        return f"bf16: {len(targets)} linear layers, bf16 weights, {gemm} ({isa}), float32 activations"
    logger.warning(
        "quantization='bf16' on a CPU without AVX-512 BF16 or AMX: bf16 GEMMs are emulated here and "
        "can run far slower than float32; int8 is the faster mode on this CPU"
    )
    return f"bf16: {len(targets)} linear layers, {gemm} (emulated: no native bf16 on this CPU)"
