"""The CPU GEMMs a float `Linear` can run on, behind one call (`packed_linear`): torch.mm on the
``[in, out]`` weight, oneDNN's linear on its own prepacked layout, and loomlm's AVX2 GEMM
(csrc/f32_gemm_avx2.cpp) on panels of 16 output columns, ``[ceil(out / 16), in, 16]``, beside its
torch reference `panel_linear_ref` (same signature). Which one a layer runs is chosen per machine
by timing (`loomlm.engine.models.linear_kernels`)."""

from __future__ import annotations

import torch

from loomlm.kernels.native import _C

PANEL_WIDTH = 16
KERNELS = ("torch.mm", "onednn", "loomlm")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def panel_gemm_available() -> bool:
    return _C is not None and _C.f32_panel_gemm_supported()


def pack_weight(weight_t: torch.Tensor, kernel: str) -> torch.Tensor:
    """``weight_t`` ``[in, out]`` in the layout `kernel` reads (a new tensor: the caller may drop
    ``weight_t``)."""
    weight_t = weight_t.detach()
    if kernel == "onednn":
        return torch.ops.mkldnn._reorder_linear_weight(weight_t.t().contiguous(), None)
    if kernel == "loomlm":
        return _C.f32_pack_panels(weight_t.contiguous()) if _C is not None else pack_panels_ref(weight_t)
    raise ValueError(f"no packed layout for linear kernel {kernel!r} (packed kernels: onednn, loomlm)")


def packed_linear(
    kernel: str, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """``x @ W + bias`` for ``W`` packed by `pack_weight` for ``kernel``."""
    if kernel == "loomlm":
        return panel_linear(x, packed, bias, out_features)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def panel_linear(
    x: torch.Tensor, panels: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """``x`` ``[rows, in]`` float32 times the panel-packed weight (+ ``bias``) -> ``[rows, out]``:
    the C++ kernel on a CPU that runs it, else the reference."""
    if panel_gemm_available() and x.device.type == "cpu" and x.dtype == torch.float32:
        return _C.f32_panel_linear(x, panels, bias, out_features)
    return panel_linear_ref(x, panels, bias, out_features)


def panel_linear_ref(
    x: torch.Tensor, panels: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    weight_t = panels.permute(1, 0, 2).reshape(panels.shape[1], -1)[:, :out_features]
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def pack_panels_ref(weight_t: torch.Tensor) -> torch.Tensor:
    in_features, out_features = weight_t.shape
    num_panels = -(-out_features // PANEL_WIDTH)
    padded = weight_t.new_zeros(in_features, num_panels * PANEL_WIDTH)
    padded[:, :out_features] = weight_t
    return padded.view(in_features, num_panels, PANEL_WIDTH).permute(1, 0, 2).contiguous()
