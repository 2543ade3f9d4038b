"""The default model's own GGUF weight blocks, by our module names, for the block-quantized modes
(`block_quant.py`): Q4_1 for the linear layers and Q8_0 for the tied embedding / LM head, exactly
the bytes llama.cpp runs, rearranged by whole rows only (never dequantized).

Two rearrangements make them our layers: llama.cpp stores q/k rows permuted for its rotary layout
(undone here as Hugging Face's GGUF loader undoes it for the float weights), and our fused layers
(qkv, gate_up) stack their parts' rows as `LLAMA_PACKING` declares."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from loomlm.engine.model_files import default_model_gguf
from loomlm.engine.models.arch import LlamaArch

_GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def read_default_blocks(model_dir: Path, arch: LlamaArch) -> dict[str, tuple[torch.Tensor, str]] | None:
    """``{module name: (blocks [out, in / 32 * bytes] uint8, "q4_1" | "q8_0")}`` when ``model_dir`` is
    the converted default model, else None (other checkpoints have no blocks to take)."""
    import gguf  # the reader is only needed here

    with tempfile.TemporaryDirectory(prefix="loomlm-gguf-") as scratch:
        path = default_model_gguf(model_dir, Path(scratch))
        if path is None:
            return None
        reader = gguf.GGUFReader(str(path))
        tensors = {t.name: t for t in reader.tensors}
        blocks: dict[str, tuple[torch.Tensor, str]] = {}
        for layer in range(arch.num_layers):
            for packed in arch.packing:
                names = [(f"blk.{layer}.{_GGUF_NAMES[p]}.weight", p) for p in packed.parts]
                parts = [_rows(tensors[name], p, arch) for name, p in names]
                if len({fmt for _, fmt in parts}) == 1 and parts[0][1] is not None:
                    stacked = torch.cat([t for t, _ in parts]) if len(parts) > 1 else parts[0][0]
                    blocks[f"layers.{layer}.{packed.submodule}.{packed.name}"] = (stacked, parts[0][1])
        if "output.weight" not in tensors:  # tied: the LM head is the embedding
            head, fmt = _rows(tensors["token_embd.weight"], None, arch)
            if fmt is not None:
                blocks["lm_head"] = (head, fmt)
    return blocks


def _rows(tensor, part: str | None, arch: LlamaArch) -> tuple[torch.Tensor, str | None]:
    fmt = {"Q4_1": "q4_1", "Q8_0": "q8_0"}.get(tensor.tensor_type.name)
    rows = torch.from_numpy(np.array(tensor.data, dtype=np.uint8, copy=True))  # [out, bytes], off the map
    if part in ("q_proj", "k_proj"):
        heads = arch.num_heads if part == "q_proj" else arch.num_kv_heads
        # llama.cpp interleaves each head's two rotary halves; put the rows back in HF's order.
        rows = rows.reshape(heads, -1, 2, rows.shape[1]).transpose(1, 2).reshape(rows.shape)
    return rows, fmt
