"""The CPU GEMMs a float `Linear` can run on: torch.mm on the ``[in, out]`` weight, and behind one
call (`packed_linear`) oneDNN's linear on its own prepacked layout and loomlm's AVX2 GEMM
(csrc/f32_gemm_avx2.cpp) on panels of 16 output columns, ``[ceil(out / 16), in, 16]``, beside its
torch reference `panel_linear_ref` (same signature as ``_C.f32_panel_linear``). Which one a layer
runs is chosen per machine by timing (`loomlm.engine.models.linear_kernels`), among the kernels
available here; `packed_linear` then calls it without checking again (it runs every layer, every
step).

An MLP's gate_up projection on loomlm's panels can also run fused with SiLU-and-multiply
(`gate_up_silu_mul`, reference `gate_up_silu_mul_ref`): panels of 8 gate columns then the same 8 up
columns, ``[ceil(I / 8), in, 16]``, so each register tile holds both halves of its outputs and the
2I-wide product is never written (the same sums and activation as the two ops, bit for bit)."""

from __future__ import annotations

import functools

import torch

from loomlm.kernels.native import _C

PANEL_WIDTH = 16
GATE_UP_WIDTH = 8  # a gate_up panel's gate columns (then as many up columns)
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


def pack_gate_up(weight_t: torch.Tensor) -> torch.Tensor:
    """A float32 ``[in, 2I]`` gate | up weight in `gate_up_silu_mul`'s layout (a new tensor)."""
    if not panel_gemm_available():
        raise ValueError("the fused gate_up GEMM needs loomlm._C built and a CPU with AVX2 and FMA")
    return _C.f32_pack_gate_up_panels(weight_t.detach().contiguous())


def gate_up_silu_mul(x: torch.Tensor, packed: torch.Tensor, intermediate: int) -> torch.Tensor:
    """``silu(x @ gate) * (x @ up)``, ``[rows, intermediate]``, for a weight packed by `pack_gate_up`."""
    return _C.f32_panel_silu_mul(x, packed, intermediate)


def unpack_panels(panels: torch.Tensor, out_features: int) -> torch.Tensor:
    """The ``[in, out]`` weight of panels packed by ``pack_weight(..., "loomlm")`` (a view)."""
    return panels.permute(1, 0, 2).reshape(panels.shape[1], -1)[:, :out_features]


def panel_linear_ref(
    x: torch.Tensor, panels: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    weight_t = unpack_panels(panels, out_features)
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def gate_up_silu_mul_ref(x: torch.Tensor, packed: torch.Tensor, intermediate: int) -> torch.Tensor:
    num_panels, in_features, _ = packed.shape
    halves = packed.view(num_panels, in_features, 2, GATE_UP_WIDTH).permute(2, 1, 0, 3)
    gate, up = halves.reshape(2, in_features, -1)[:, :, :intermediate]
    return torch.nn.functional.silu(x @ gate) * (x @ up)


def pack_gate_up_ref(weight_t: torch.Tensor) -> torch.Tensor:
    in_features, width = weight_t.shape
    intermediate = width // 2
    num_panels = -(-intermediate // GATE_UP_WIDTH)
    padded = weight_t.new_zeros(in_features, 2, num_panels * GATE_UP_WIDTH)
    padded[:, :, :intermediate] = weight_t.view(in_features, 2, intermediate)
    halves = padded.view(in_features, 2, num_panels, GATE_UP_WIDTH).permute(2, 0, 1, 3)
    return halves.reshape(num_panels, in_features, PANEL_WIDTH)


def pack_panels_ref(weight_t: torch.Tensor) -> torch.Tensor:
    in_features, out_features = weight_t.shape
    num_panels = -(-out_features // PANEL_WIDTH)
    padded = weight_t.new_zeros(in_features, num_panels * PANEL_WIDTH)
    padded[:, :out_features] = weight_t
    return padded.view(in_features, num_panels, PANEL_WIDTH).permute(1, 0, 2).contiguous()
