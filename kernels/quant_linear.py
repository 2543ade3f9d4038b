"""Block-quantized linear layers in GGUF's Q4_1 and Q8_0 layouts: the weight quantizers
(llama.cpp's reference rounding, so re-quantizing a Q4_1 model's own weights gives its blocks back),
their dequantizers, and ``x @ W^T`` over the blocks.

The products quantize the activations per row and per 32-block to int8 and sum each block's exact
integer dot product under the two blocks' scales, as llama.cpp does (`*_ref`: the math in torch,
the test oracle and the path where the extension is missing). `loomlm._C` (`native.py`) runs the same math in
C++ (AVX-512 VNNI where the CPU has it, chosen at run time; scalar otherwise) on torch's threads.

Layouts, per block of 32 weights along the input dimension (row-major ``[out, in / 32 * bytes]``):
Q4_1 = fp16 d, fp16 m, 16 bytes whose low nibbles are weights 0-15 and high nibbles 16-31
(w = d * q + m); Q8_0 = fp16 d, 32 int8 (w = d * q)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loomlm.kernels.native import _C

BLOCK = 32
Q4_1_BYTES = 20
Q8_0_BYTES = 34
FORMATS = {"q4_1": Q4_1_BYTES, "q8_0": Q8_0_BYTES}


def native_isa() -> str | None:
    """The instruction set the C++ kernels use on this CPU ("avx512_vnni", "scalar"), or None when
    the extension is not built."""
    return None if _C is None else _C.kernel_isa()


def _check_blocks(blocks: torch.Tensor, in_features: int, block_bytes: int) -> None:
    if in_features % BLOCK:
        raise ValueError(f"block-quantized layers need in_features divisible by {BLOCK}, got {in_features}")
    row_bytes = in_features // BLOCK * block_bytes
    if blocks.dtype != torch.uint8 or blocks.dim() != 2 or blocks.shape[1] != row_bytes:
        raise ValueError(f"blocks must be uint8 [out, {row_bytes}], got {blocks.dtype} {tuple(blocks.shape)}")


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() != 2 or weight.shape[1] % BLOCK:
        raise ValueError(f"weight must be [out, in] with in divisible by {BLOCK}, got {tuple(weight.shape)}")
    return weight.detach().float().reshape(weight.shape[0], -1, BLOCK)


def _half_bytes(values: torch.Tensor) -> torch.Tensor:
    """[..., n] float -> [..., n, 2] the fp16 bytes (little-endian, as GGUF stores them)."""
    return values.to(torch.float16).contiguous().view(torch.uint8).reshape(*values.shape, 2)


def _read_half(blocks: torch.Tensor, block_bytes: int, offset: int) -> torch.Tensor:
    """The fp16 at byte ``offset`` of every block, as float32: [out, num_blocks]."""
    raw = blocks.reshape(blocks.shape[0], -1, block_bytes)[..., offset : offset + 2].contiguous()
    return raw.view(torch.float16).squeeze(-1).float()


def quantize_q4_1(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` float -> Q4_1 blocks, rounding as llama.cpp's ``quantize_row_q4_1_ref``."""
    x = _blocks(weight)
    low, high = x.amin(dim=-1), x.amax(dim=-1)
    d = (high - low) / 15.0
    inv_d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    # (int8)(v + 0.5) truncates toward zero; v >= 0 here, so floor.
    q = torch.floor((x - low[..., None]) * inv_d[..., None] + 0.5).clamp_(max=15).to(torch.uint8)
    packed = q[..., :16] | (q[..., 16:] << 4)
    out = torch.cat((_half_bytes(d), _half_bytes(low), packed), dim=-1)
    return out.reshape(weight.shape[0], -1)


def quantize_q8_0(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` float -> Q8_0 blocks, rounding as llama.cpp's ``quantize_row_q8_0_ref``."""
    x = _blocks(weight)
    d = x.abs().amax(dim=-1) / 127.0
    inv_d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = (x * inv_d[..., None]).abs().add_(0.5).floor_().mul_((x * inv_d[..., None]).sign())  # roundf
    out = torch.cat((_half_bytes(d), q.to(torch.int8).view(torch.uint8)), dim=-1)
    return out.reshape(weight.shape[0], -1)


def dequantize_q4_1(blocks: torch.Tensor) -> torch.Tensor:
    out_features = blocks.shape[0]
    by_block = blocks.reshape(out_features, -1, Q4_1_BYTES)
    packed = by_block[..., 4:]
    q = torch.cat((packed & 0x0F, packed >> 4), dim=-1).float()
    d, m = _read_half(blocks, Q4_1_BYTES, 0), _read_half(blocks, Q4_1_BYTES, 2)
    return (q * d[..., None] + m[..., None]).reshape(out_features, -1)


def dequantize_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    out_features = blocks.shape[0]
    q = blocks.reshape(out_features, -1, Q8_0_BYTES)[..., 2:].contiguous().view(torch.int8).float()
    return (q * _read_half(blocks, Q8_0_BYTES, 0)[..., None]).reshape(out_features, -1)


@dataclass(slots=True)
class PackedBlocks:
    """A layer's weight in the kernels' layout (see csrc/quant_kernels.h), built from GGUF blocks by
    `pack_blocks`: ``qs`` the quants (Q4_1: two nibbles a byte), ``scales``/``mins`` fp16
    ``[out, padded_in / 32]`` (``mins`` None for Q8_0). ``in_features`` is padded to whole pairs of
    blocks with zero blocks; the forward pads ``x`` to match."""

    fmt: str
    in_features: int
    qs: torch.Tensor
    scales: torch.Tensor
    mins: torch.Tensor | None

    @property
    def padded_in_features(self) -> int:
        return self.scales.shape[1] * BLOCK


def pack_blocks(blocks: torch.Tensor, fmt: str, in_features: int) -> PackedBlocks:
    """GGUF ``fmt`` blocks ``[out, in / 32 * bytes]`` -> the kernels' layout (no dequantization)."""
    if fmt not in FORMATS:
        raise ValueError(f"block format must be one of {sorted(FORMATS)}, got {fmt!r}")
    _check_blocks(blocks, in_features, FORMATS[fmt])
    out_features, num_blocks = blocks.shape[0], in_features // BLOCK
    by_block = blocks.reshape(out_features, num_blocks, FORMATS[fmt])
    pad = num_blocks % 2  # a zero block completes the last pair
    by_block = torch.cat((by_block, by_block.new_zeros(out_features, pad, FORMATS[fmt])), dim=1)
    halves = by_block[..., :4].contiguous().view(torch.float16)  # [out, blocks, 2] (Q8_0: d, q0q1)
    scales = halves[..., 0].contiguous()
    if fmt == "q8_0":
        qs = by_block[..., 2:].reshape(out_features, -1).contiguous().view(torch.int8)
        return PackedBlocks(fmt, in_features, qs, scales, None)
    packed = by_block[..., 4:]
    nibbles = torch.cat((packed & 0x0F, packed >> 4), dim=-1).reshape(out_features, -1, 64)  # by pair
    qs = (nibbles[..., :32] | (nibbles[..., 32:] << 4)).reshape(out_features, -1).contiguous()
    return PackedBlocks(fmt, in_features, qs, scales, halves[..., 1].contiguous())


def unpack_weight(packed: PackedBlocks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(quants [out, padded_in] float, scales, mins) as floats: the packed layout read back."""
    out_features = packed.qs.shape[0]
    if packed.fmt == "q8_0":
        q = packed.qs.float()
    else:
        pairs = packed.qs.reshape(out_features, -1, 32)
        q = torch.cat((pairs & 0x0F, pairs >> 4), dim=-1).reshape(out_features, -1).float()
    mins = None if packed.mins is None else packed.mins.float()
    return q, packed.scales.float(), mins


def dequantize_packed(packed: PackedBlocks) -> torch.Tensor:
    """The ``[out, in]`` float weight a packed layer stands for."""
    q, scales, mins = unpack_weight(packed)
    q = q.reshape(q.shape[0], -1, BLOCK)
    weight = q * scales[..., None] + (0 if mins is None else mins[..., None])
    return weight.reshape(q.shape[0], -1)[:, : packed.in_features]


def quantize_activations_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[rows, in] float32 -> (q [rows, blocks, 32] as float, d [rows, blocks], d * sum(q))."""
    xb = x.float().reshape(x.shape[0], -1, BLOCK)
    d = xb.abs().amax(dim=-1) / 127.0
    inv_d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(xb * inv_d[..., None])  # half to even, as the C++ kernels round
    return q, d, d * q.sum(dim=-1)


def packed_linear_ref(x: torch.Tensor, packed: PackedBlocks) -> torch.Tensor:
    """``x [rows, in] @ W^T`` over a packed layer, in torch: ``[rows, out]`` float32. The oracle of
    `packed_linear` (the same quantized activations, the same per-block sums)."""
    x = _pad_input(x.float(), packed)
    q_x, d_x, sum_x = quantize_activations_ref(x)
    q_w, scales, mins = unpack_weight(packed)
    q_w = q_w.reshape(q_w.shape[0], -1, BLOCK)
    dots = torch.einsum("rbj,obj->rob", q_x, q_w)  # exact in float32: |sum| < 2^24
    out = (dots * d_x[:, None, :] * scales[None]).sum(-1)
    return out if mins is None else out + sum_x @ mins.t()


def packed_linear(x: torch.Tensor, packed: PackedBlocks) -> torch.Tensor:
    """``x @ W^T`` over a packed layer: the C++ kernel when built, else `packed_linear_ref`."""
    if _C is None or x.device.type != "cpu":
        return packed_linear_ref(x, packed)
    x = _pad_input(x.float(), packed)
    if packed.mins is None:
        return _C.q8_0_linear(x, packed.qs, packed.scales)
    return _C.q4_1_linear(x, packed.qs, packed.scales, packed.mins)


def _pad_input(x: torch.Tensor, packed: PackedBlocks) -> torch.Tensor:
    if x.shape[1] != packed.in_features:
        raise ValueError(f"x has {x.shape[1]} features, the layer takes {packed.in_features}")
    pad = packed.padded_in_features - packed.in_features
    return torch.nn.functional.pad(x, (0, pad)) if pad else x
