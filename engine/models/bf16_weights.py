"""bfloat16 linear weights under float32 activations (``LLM(quantization="bf16")``), CPU only.

Every `Linear` of the model, LM head included, keeps its weight in bfloat16, prepacked in oneDNN's
blocked layout (half the bytes of float32). A call rounds its float32 input to bfloat16, runs
oneDNN's bf16 GEMM (float32 sums: AVX-512 BF16 ``vdpbf16ps``, or AMX, where the CPU has them) and
widens the product back to float32. Embeddings, norms, rotary, attention and the KV cache stay
float32, so loomlm's C++ ops for them run as in float32 mode, and LoRA adapters add to the layer's
float32 output as on a float layer.

Why not the whole model in bfloat16 (``dtype="bfloat16"``): on a Zen 4 with AVX-512 BF16 the bf16
GEMMs ran 2-4x float32's at the model's shapes, but the rest of a step (norms, rotary, attention)
then runs torch's generic bf16 code, and batched decoding gained only 1.02-1.28x (bench/quant.py;
this mode: 1.61x).
Only the matmuls gain from bf16 on a CPU; elementwise work converts to float32 inside anyway.

Without native bf16 instructions oneDNN emulates them (~300x slower than float32, measured on an
earlier machine): the engine then logs a warning and the kernel report says so."""

from __future__ import annotations

import logging

import torch
from torch import nn

from loomlm.engine.dtype_choice import native_bf16_flags
from loomlm.engine.models.llama import Linear
from loomlm.kernels.cpu_gemm import onednn_available, pack_weight, packed_linear

logger = logging.getLogger(__name__)


class Bf16Linear(nn.Module):
    """``x @ W + b`` with ``W`` held in bfloat16 and ``x``, ``b`` and the result in float32."""

    def __init__(self, weight_t: torch.Tensor, bias: torch.Tensor | None) -> None:
        """``weight_t``: the float layer's ``[in, out]`` weight (rounded to bfloat16 here)."""
        super().__init__()
        self.in_features, self.out_features = weight_t.shape
        weight_t = weight_t.detach().to(torch.bfloat16).contiguous()
        # oneDNN's packed layout where torch has it; else the [in, out] weight for torch.mm.
        self.kernel = "onednn" if onednn_available() else "torch.mm"
        self.weight = pack_weight(weight_t, "onednn") if self.kernel == "onednn" else weight_t
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [num_tokens, in_features] float32
        x_bf16 = x.to(torch.bfloat16)
        if self.kernel == "onednn":
            product = packed_linear("onednn", x_bf16, self.weight, None, self.out_features)
        else:
            product = torch.mm(x_bf16, self.weight)
        out = product.float()
        return out if self.bias is None else out.add_(self.bias)


def convert_to_bf16(model: nn.Module) -> str:
    """Replace every `Linear` of ``model`` by a `Bf16Linear`, in place; returns the kernel report."""
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, Linear)]
    for name, module in targets:
        model.set_submodule(name, Bf16Linear(module.weight_t, module.bias))
    gemm = "oneDNN bf16 GEMM" if onednn_available() else "torch.mm bf16"
    isas = native_bf16_flags()
    if isas:
        isa = "+".join(isas)
        return f"bf16: {len(targets)} linear layers, bf16 weights, {gemm} ({isa}), float32 activations"
    logger.warning(
        "quantization='bf16' on a CPU without AVX-512 BF16 or AMX: bf16 GEMMs are emulated here and "
        "can run far slower than float32; int8 is the faster mode on this CPU"
    )
    return f"bf16: {len(targets)} linear layers, {gemm} (emulated: no native bf16 on this CPU)"
