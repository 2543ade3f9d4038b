"""Linear layers over GGUF-style weight blocks, CPU only: ``quantization="int4"`` (Q4_1 linear
layers and a Q8_0 LM head: the layout llama.cpp runs the default model's GGUF in) and
``quantization="q8_0"`` (Q8_0 everywhere).

Each layer keeps its weight as blocks of 32 (`loomlm.kernels.quant_linear`); the product quantizes
the activations per 32-block to int8 and runs in the C++ kernels (AVX-512 VNNI where the CPU has
it). For the default model the blocks are the GGUF's own (`gguf_blocks.read_default_blocks`): the
same bits llama.cpp multiplies, never dequantized; any other checkpoint (or a tensor-parallel
shard) is quantized from its float weights with llama.cpp's rounding. LoRA adapters stay float32
and add their update to the layer's output, as on a float layer."""

from __future__ import annotations

import logging

import torch
from torch import nn

from loomlm.engine.models.llama import Linear
from loomlm.kernels.quant_linear import (
    BLOCK,
    PackedBlocks,
    dequantize_packed,
    native_isa,
    pack_blocks,
    packed_linear,
    quantize_q4_1,
    quantize_q8_0,
)

logger = logging.getLogger(__name__)

# mode -> (format of the linear layers, format of the LM head)
BLOCK_MODES = {"int4": ("q4_1", "q8_0"), "q8_0": ("q8_0", "q8_0")}
_QUANTIZERS = {"q4_1": quantize_q4_1, "q8_0": quantize_q8_0}


class BlockQuantLinear(nn.Module):
    def __init__(self, packed: PackedBlocks, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.packed = packed
        self.in_features, self.out_features = packed.in_features, packed.qs.shape[0]
        self.bias = None if bias is None else bias.detach().float()

    @classmethod
    def from_float(cls, weight_t: torch.Tensor, bias: torch.Tensor | None, fmt: str) -> BlockQuantLinear:
        """From a float layer's ``[in, out]`` weight, quantized with llama.cpp's rounding."""
        weight = weight_t.detach().t().float()
        return cls(pack_blocks(_QUANTIZERS[fmt](weight), fmt, weight.shape[1]), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [num_tokens, in_features] float32
        out = packed_linear(x, self.packed)
        return out if self.bias is None else out.add_(self.bias)

    def dequantized_weight_t(self) -> torch.Tensor:
        """``[in, out]``: the float weight the blocks stand for (tests, PEFT references)."""
        return dequantize_packed(self.packed).t().contiguous()


def quantize_blocks(
    model: nn.Module, mode: str, source_blocks: dict[str, tuple[torch.Tensor, str]] | None
) -> str:
    """Replace every `Linear` of ``model`` by a `BlockQuantLinear` in ``mode``'s formats, in place.
    ``source_blocks``: ready GGUF blocks by module name (taken as they are when their format is the
    mode's); the other layers are quantized from their float weights. Returns a one-line account of
    where the blocks came from and which kernel runs them."""
    linear_fmt, head_fmt = BLOCK_MODES[mode]
    source_blocks = source_blocks or {}
    taken = quantized = kept = 0
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, Linear)]:
        fmt = head_fmt if name.rpartition(".")[2] == "lm_head" else linear_fmt
        if module.weight_t.shape[0] % BLOCK:
            kept += 1  # blocks run along the input: a width that does not divide stays float
            continue
        blocks, source_fmt = source_blocks.get(name, (None, None))
        if blocks is not None and source_fmt == fmt:
            layer = BlockQuantLinear(pack_blocks(blocks, fmt, module.weight_t.shape[0]), module.bias)
            taken += 1
        else:
            layer = BlockQuantLinear.from_float(module.weight_t, module.bias, fmt)
            quantized += 1
        model.set_submodule(name, layer)
    kernel = f"loomlm._C {native_isa()}" if native_isa() else "torch reference (loomlm._C not built)"
    account = (
        f"{mode}: linear layers {linear_fmt}, LM head {head_fmt}; {taken} layers from the GGUF's own "
        f"blocks, {quantized} quantized from float, {kept} kept float (input width not a multiple "
        f"of {BLOCK}); kernel {kernel}"
    )
    logger.info(account)
    return account
