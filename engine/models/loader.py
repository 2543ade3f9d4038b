"""Load a Hugging Face Llama-family checkpoint (config.json + *.safetensors) into our model,
concatenating the weights of each fused layer's parts as the model's packing
(`loomlm.engine.models.arch.LLAMA_PACKING`, read through `LlamaArch.packing`) declares. Under tensor
parallelism each rank keeps its slice of every part (`TPShard`) before packing."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, PretrainedConfig

from loomlm.engine.models.arch import LlamaArch, rope_inv_freq
from loomlm.engine.models.llama import LlamaForCausalLM, RotaryEmbedding
from loomlm.engine.parallel.group import TPGroup
from loomlm.engine.parallel.shard import TPShard

_VOCAB_ROWS = ("embed_tokens", "lm_head")


def read_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                tensors[name] = handle.get_tensor(name)
    return tensors


def _our_name(hf_name: str) -> str:
    # HF nests the decoder under "model."; ours is flat.
    return hf_name.removeprefix("model.")


def load_arch(model_dir: Path) -> tuple[LlamaArch, PretrainedConfig]:
    """The checkpoint's architecture, from its config.json alone (no weights read)."""
    hf_config = AutoConfig.from_pretrained(model_dir)
    return LlamaArch.from_hf_config(hf_config), hf_config


def load_model(
    model_dir: Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tp: TPGroup | None = None,
) -> tuple[LlamaForCausalLM, LlamaArch, PretrainedConfig]:
    """The model (this rank's shard under ``tp``), the whole model's architecture and HF config."""
    arch, hf_config = load_arch(model_dir)
    tp = tp or TPGroup.single()
    shard = TPShard(arch, tp.rank, tp.world_size)
    inv_freq, rope_scaling = rope_inv_freq(hf_config, arch.head_dim)
    rotary = RotaryEmbedding(inv_freq, rope_scaling, arch.max_position_embeddings)
    # Parameters start on the meta device (no init cost); the checkpoint's tensors are assigned.
    with torch.device("meta"):
        model = LlamaForCausalLM(arch, rotary, tp)
    checkpoint = {_our_name(k): v for k, v in read_checkpoint(model_dir).items()}
    if arch.tie_word_embeddings or "lm_head.weight" not in checkpoint:
        checkpoint["lm_head.weight"] = checkpoint["embed_tokens.weight"]

    packed_parts = {packed.name: packed.parts for packed in arch.packing}
    state: dict[str, torch.Tensor] = {}
    for name in model.state_dict():
        parent, _, leaf = name.rpartition(".")
        module_parent, _, module = parent.rpartition(".")
        hf_leaf = "weight" if leaf == "weight_t" else leaf
        if module in packed_parts:
            names = packed_parts[module]
            parts = [checkpoint.pop(f"{module_parent}.{p}.{hf_leaf}", None) for p in names]
            if any(p is None for p in parts):
                raise ValueError(f"checkpoint in {model_dir} lacks one of {names} for {parent}")
            parts = [shard.slice_linear(p, part) for p, part in zip(names, parts, strict=True)]
            # A one-part layer (o_proj, down_proj) is the checkpoint's tensor itself: no copy.
            tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        elif f"{parent}.{hf_leaf}" in checkpoint:
            tensor = checkpoint.pop(f"{parent}.{hf_leaf}")
            if parent in _VOCAB_ROWS:
                tensor = shard.slice_vocab(tensor)
        else:
            raise ValueError(f"checkpoint in {model_dir} has no tensor for {parent}.{hf_leaf!r}")
        # Linear layers keep W transposed ([in, out]); see loomlm.engine.models.llama.Linear.
        state[name] = tensor.t().contiguous() if leaf == "weight_t" else tensor
    unused = [k for k in checkpoint if "rotary_emb" not in k and k != "embed_tokens.weight"]
    if unused:
        raise ValueError(f"checkpoint in {model_dir} has tensors the model does not use: {unused[:5]}")

    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    model.to(device=device)
    model.eval()
    return model, arch, hf_config
