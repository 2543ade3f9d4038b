"""loomlm's bfloat16-weight GEMM on AVX-512 BF16 (csrc/bf16_gemm_avx512.cpp), beside its torch
references (same signatures): the weight packed once into panels of 32 output columns of bf16 pairs,
``[ceil(out / 32), ceil(in / 2), 32, 2]`` (pair j of lane c: rows 2j and 2j + 1 of column c, the
order ``vdpbf16ps`` multiplies), the float32 input rounded to bf16 once per call, float32 sums and a
float32 result. The gate_up form holds 16 gate columns then the same 16 up columns per panel and
applies SiLU-and-multiply before anything is stored (equal to the plain product followed by
``silu_mul``, bit for bit).

Which kernel a bf16 layer runs (this one or oneDNN's bf16 GEMM) is measured per machine at load
(`loomlm.engine.models.bf16_weights`)."""

from __future__ import annotations

import functools

import torch

from loomlm.kernels.native import _C

BF16_PANEL_WIDTH = 32
BF16_GATE_UP_WIDTH = 16  # a gate_up panel's gate columns (then as many up columns)


@functools.cache
def bf16_panels_available() -> bool:
    return _C is not None and _C.bf16_panel_gemm_supported()


def _require() -> None:
    if not bf16_panels_available():
        raise ValueError("loomlm's bf16 GEMM needs loomlm._C built and a CPU with AVX-512 BF16")


def pack_bf16_panels(weight_t: torch.Tensor) -> torch.Tensor:
    """``weight_t`` ``[in, out]`` (float32 or bf16) in `bf16_panel_linear`'s layout (a new tensor)."""
    _require()
    return _C.bf16_pack_panels(weight_t.detach().contiguous())


def bf16_panel_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """``bf16(x) @ W + bias`` in float32, ``[rows, out_features]``, for ``W`` packed by `pack_bf16_panels`."""
    return _C.bf16_panel_linear(x, packed, bias, out_features)


def pack_bf16_gate_up(weight_t: torch.Tensor) -> torch.Tensor:
    """A ``[in, 2I]`` gate | up weight in `bf16_gate_up_silu_mul`'s layout (a new tensor)."""
    _require()
    return _C.bf16_pack_gate_up_panels(weight_t.detach().contiguous())


def bf16_gate_up_silu_mul(x: torch.Tensor, packed: torch.Tensor, intermediate: int) -> torch.Tensor:
    """``silu(bf16(x) @ gate) * (bf16(x) @ up)``, ``[rows, I]``, on `pack_bf16_gate_up`'s layout."""
    return _C.bf16_panel_silu_mul(x, packed, intermediate)


def unpack_bf16_panels(panels: torch.Tensor, in_features: int, out_features: int) -> torch.Tensor:
    """The bf16 ``[in, out]`` weight of panels packed by `pack_bf16_panels` (a new tensor)."""
    num_panels, pairs, width, _ = panels.shape
    return panels.permute(1, 3, 0, 2).reshape(2 * pairs, num_panels * width)[:in_features, :out_features]


def pack_bf16_panels_ref(weight_t: torch.Tensor) -> torch.Tensor:
    in_features, out_features = weight_t.shape
    pairs, num_panels = -(-in_features // 2), -(-out_features // BF16_PANEL_WIDTH)
    padded = weight_t.new_zeros(2 * pairs, num_panels * BF16_PANEL_WIDTH)
    padded[:in_features, :out_features] = weight_t
    layout = padded.view(pairs, 2, num_panels, BF16_PANEL_WIDTH).permute(2, 0, 3, 1)
    return layout.to(torch.bfloat16).contiguous()


def pack_bf16_gate_up_ref(weight_t: torch.Tensor) -> torch.Tensor:
    in_features, width = weight_t.shape
    intermediate = width // 2
    pairs, num_panels = -(-in_features // 2), -(-intermediate // BF16_GATE_UP_WIDTH)
    padded = weight_t.new_zeros(2 * pairs, 2, num_panels * BF16_GATE_UP_WIDTH)
    padded[:in_features, :, :intermediate] = weight_t.view(in_features, 2, intermediate)
    layout = padded.view(pairs, 2, 2, num_panels, BF16_GATE_UP_WIDTH).permute(3, 0, 2, 4, 1)
    return layout.reshape(num_panels, pairs, BF16_PANEL_WIDTH, 2).to(torch.bfloat16).contiguous()


def bf16_panel_linear_ref(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    weight_t = unpack_bf16_panels(packed, x.shape[1], out_features).float()
    product = x.bfloat16().float() @ weight_t
    return product if bias is None else product + bias


def bf16_gate_up_silu_mul_ref(x: torch.Tensor, packed: torch.Tensor, intermediate: int) -> torch.Tensor:
    num_panels, pairs, _, _ = packed.shape
    # Lanes 0-15 of every panel are gate columns, 16-31 up columns: unpack as a [in, 2, panels * 16] weight.
    halves = packed.view(num_panels, pairs, 2, BF16_GATE_UP_WIDTH, 2).permute(1, 4, 2, 0, 3)
    weight = halves.reshape(2 * pairs, 2, num_panels * BF16_GATE_UP_WIDTH)[: x.shape[1], :, :intermediate]
    gate, up = (x.bfloat16().float() @ weight.float().reshape(x.shape[1], -1)).split(intermediate, dim=1)
    return torch.nn.functional.silu(gate) * up
