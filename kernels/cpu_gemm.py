"""The CPU GEMMs a float `Linear` can run on: torch.mm on the ``[in, out]`` weight, and behind one
call (`packed_linear`) oneDNN's linear on its own prepacked layout and loomlm's AVX2 GEMM
(csrc/f32_gemm_avx2.cpp) on panels of 16 output columns, ``[ceil(out / 16), in, 16]``, beside its
torch reference `panel_linear_ref` (same signature as ``_C.f32_panel_linear``). Which one a layer
runs is chosen per machine by timing (`loomlm.engine.models.linear_kernels`), among the kernels
available here; `packed_linear` then calls it without checking again (it runs every layer, every
step)."""

from __future__ import annotations

import functools

import torch

from loomlm.kernels.native import _C

PANEL_WIDTH = 16
KERNELS = ("torch.mm", "onednn", "loomlm")


@functools.cache
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def panel_gemm_available() -> bool:
    return _C is not None and _C.f32_panel_gemm_supported()


def pack_weight(weight_t: torch.Tensor, kernel: str) -> torch.Tensor:
    """``weight_t`` ``[in, out]`` in the layout `kernel` reads (a new tensor: the caller may drop
    ``weight_t``)."""
    weight_t = weight_t.detach()
    if kernel == "onednn" and onednn_available():
        return torch.ops.mkldnn._reorder_linear_weight(weight_t.t().contiguous(), None)
    if kernel == "loomlm" and panel_gemm_available():
        return _C.f32_pack_panels(weight_t.contiguous())
    raise ValueError(
        f"no packed layout for linear kernel {kernel!r} here (packed kernels: onednn where torch has "
        "oneDNN, loomlm where loomlm._C is built and the CPU has AVX2 and FMA)"
    )


def packed_linear(
    kernel: str, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """``x @ W + bias`` for ``W`` packed by `pack_weight` for ``kernel`` (float32 for loomlm's)."""
    if kernel == "loomlm":
        return _C.f32_panel_linear(x, packed, bias, out_features)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


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
