"""int8 linear layers (``LLM(quantization="int8")``), CPU only, calibrated at load time.

Weights: int8 per output channel, symmetric. Activations: int8 per token (one scale per row),
quantized each step (dynamic), after a SmoothQuant rescale: input channel j is divided by
``s_j = sqrt(max|x_j| / max|W_:,j|)`` and W's column j multiplied by it (the product is unchanged;
activation outliers move into the weights, which quantize per channel). ``max|x_j|`` comes from
running a calibration text through the float model (`calibrate`). The product is exact int32 sums,
rescaled after, from the int8 GEMM this CPU runs best (`int8_gemm_name`): where it has AVX-512 VNNI,
loomlm._C's VNNI tiles for the few rows of a decode step and oneDNN's (``torch._int_mm``) for more;
loomlm._C's AVX2 kernels where it has AVX2 only (oneDNN ran 4-25x slower than float32 there, AMD Zen 3).

Why this scheme, measured on SmolLM2-135M (perplexity over 4096 held tokens, bench/quant.py):
per-tensor activations (fbgemm's ``quantized::linear_dynamic``, faster at 8+ rows) cost +72%, +8%
smoothed, because down_proj's input (SiLU(gate) x up) has rows of very different ranges; per token
without smoothing +17%; per token smoothed +1.95%, and +0.73% with the LM head left in float32.
The LM head was the largest single loss, and a quarter of a decode step in float32: it runs in int8
and then recomputes each row's 64 largest logits exactly (`RefinedInt8Linear`).

Embeddings and norms stay float32, and so do LoRA adapters, which add their update to the layer's
output as on a float layer."""

from __future__ import annotations

import torch
from torch import nn

from loomlm.engine.models.llama import Linear
from loomlm.kernels.cpu_ops import native_ops_apply
from loomlm.kernels.native import _C

QUANTIZATION_MODES = ("int8",)
REFINED_LAYERS = ("lm_head",)
REFINE_TOP_K = 64
SMOOTHING_ALPHA = 0.5  # SmoothQuant's migration strength: 0.5 splits the range evenly (measured best)
_NO_SMOOTHING = torch.empty(0)


def int8_gemm_name() -> str:
    """Which int8 GEMM the layers run on this machine (for the bench output)."""
    kernel = "onednn" if _C is None else _C.int8_kernel()
    if kernel == "avx512_vnni":
        return "loomlm._C avx512_vnni below 96 rows, torch._int_mm (oneDNN) from 96"
    return "torch._int_mm (oneDNN)" if kernel == "onednn" else f"loomlm._C {kernel}"


class Int8Linear(nn.Module):
    def __init__(
        self, weight_t: torch.Tensor, bias: torch.Tensor | None, input_absmax: torch.Tensor | None = None
    ) -> None:
        """``weight_t``: the float layer's ``[in, out]`` weight; ``input_absmax``: ``[in]``, the
        calibration's largest |input| per channel (None: no smoothing)."""
        super().__init__()
        weight = weight_t.detach().t().float()  # [out, in]
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.inv_smooth: torch.Tensor | None = None
        if input_absmax is not None:
            smooth = smoothing_factors(input_absmax.float(), weight.abs().amax(dim=0))
            weight = weight * smooth
            self.inv_smooth = smooth.reciprocal()
        self.w_scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        # [out, in] contiguous: the layout loomlm's int8 kernel reads, and _int_mm takes its [in, out]
        # transpose as the layout it reads fastest for the few rows of a decode step (measured).
        qweight = torch.round(weight / self.w_scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.qweight = qweight.contiguous()
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [num_tokens, in_features] float32
        if native_ops_apply(x):  # the same float operations in one C++ call (identical results)
            smooth = _NO_SMOOTHING if self.inv_smooth is None else self.inv_smooth
            return _C.int8_linear(x, self.qweight, self.w_scale, smooth, self.bias)
        if self.inv_smooth is not None:
            x = x * self.inv_smooth
        x_scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127.0)
        x_int8 = torch.round(x / x_scale).to(torch.int8)
        out = torch._int_mm(x_int8, self.qweight.t()).float().mul_(x_scale).mul_(self.w_scale)
        return out if self.bias is None else out.add_(self.bias)

    def dequantized_weight_t(self) -> torch.Tensor:
        """``[in, out]``: the float weight the int8 values stand for, smoothing undone (for tests)."""
        weight = self.qweight.float() * self.w_scale[:, None]
        if self.inv_smooth is not None:
            weight = weight * self.inv_smooth
        return weight.t().contiguous()


class RefinedInt8Linear(nn.Module):
    """The LM head: int8 logits for the whole vocabulary, then the ``top_k`` largest of each row
    recomputed exactly from the float32 weight rows. The tokens that can win greedy decoding, and the
    terms that dominate the softmax, are exact; the tail keeps the int8 values. Under tensor
    parallelism each rank refines its own slice, so the gathered logits are exact on a superset of
    the global top-k."""

    def __init__(self, weight_t: torch.Tensor, input_absmax: torch.Tensor | None, top_k: int = REFINE_TOP_K):
        super().__init__()
        self.int8 = Int8Linear(weight_t, None, input_absmax)
        self.rows = weight_t.detach().t().float().contiguous()  # [out, in]: rows gather contiguously
        self.top_k = min(top_k, self.rows.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.int8(x)
        top = logits.topk(self.top_k, dim=1, sorted=False).indices  # [T, k]
        exact = torch.bmm(self.rows[top], x.unsqueeze(2)).squeeze(2)  # [T, k, in] @ [T, in, 1]
        return logits.scatter_(1, top, exact)


def smoothing_factors(input_absmax: torch.Tensor, weight_absmax: torch.Tensor) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors; channels never active in calibration keep 1."""
    alpha = SMOOTHING_ALPHA
    factors = input_absmax.clamp(min=1e-5).pow(alpha) / weight_absmax.clamp(min=1e-5).pow(1 - alpha)
    return torch.where(input_absmax > 0, factors, torch.ones_like(factors)).clamp(min=1e-2, max=1e2)


def calibrate(model: nn.Module, run_forward) -> dict[str, torch.Tensor]:
    """The largest |input| per channel of every `Linear` of ``model`` while ``run_forward()`` runs."""
    absmax: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            seen = inputs[0].detach().abs().amax(dim=0).float()
            absmax[name] = seen if name not in absmax else torch.maximum(absmax[name], seen)

        return hook

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, Linear)]
    handles = [module.register_forward_hook(record(name)) for name, module in linears]
    try:
        run_forward()
    finally:
        for handle in handles:
            handle.remove()
    return absmax


def quantize_model(model: nn.Module, mode: str, input_absmax: dict[str, torch.Tensor] | None = None) -> int:
    """Replace every `Linear` of ``model`` by its ``mode`` version (`REFINED_LAYERS` by the refined
    one), in place; returns how many. ``input_absmax``: `calibrate`'s result (None: no smoothing)."""
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES} or None, got {mode!r}")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, Linear)]
    for name, module in targets:
        absmax = None if input_absmax is None else input_absmax.get(name)
        if name.rpartition(".")[2] in REFINED_LAYERS and module.bias is None:
            model.set_submodule(name, RefinedInt8Linear(module.weight_t, absmax))
        else:
            model.set_submodule(name, Int8Linear(module.weight_t, module.bias, absmax))
    return len(targets)
