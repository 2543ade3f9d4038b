"""Read a PEFT LoRA adapter directory and validate it against the base model.

Produces an immutable `LoRAAdapter`: per (layer, module) the A matrix ``[r, in]`` and B ``[out, r]``
with PEFT's scale (alpha/r, or alpha/sqrt(r) with rsLoRA, after rank_pattern/alpha_pattern) folded
into B, float32 on the CPU. The tensors present in the file decide which layers and modules are
targeted, exactly as PEFT's loaded model does (so list, regex and layers_to_transform targets all
work). Features whose forward differs from plain LoRA on the seven Llama linear layers are refused
with an AdapterError naming the keyword or tensor: DoRA, LoRA/base biases, modules_to_save,
embedding or lm_head LoRA, trainable tokens. ``fan_in_fan_out`` is ignored like PEFT does for
nn.Linear targets (their A/B layout does not depend on it), ``lora_dropout`` is a training detail.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.spec import LoRABaseSpec

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
BIN_FILE = "adapter_model.bin"

_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(\w+)\.(\w+)\.lora_([AB])\.(?:[\w-]+\.)?weight$"
)
# Config keywords whose non-default value changes the forward in a way this engine does not run.
_REFUSED_FLAGS = {
    "use_dora": "DoRA (use_dora) is not supported; merge the adapter or retrain without DoRA",
    "lora_bias": "LoRA biases (lora_bias) are not supported",
    "modules_to_save": "modules_to_save (fully trained extra modules) is not supported",
    "trainable_token_indices": "trainable_token_indices is not supported",
    "target_parameters": "target_parameters is not supported",
    "layer_replication": "layer_replication is not supported",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) is not supported",
    "use_qalora": "QALoRA (use_qalora) is not supported",
}


@dataclass(slots=True, frozen=True)
class LoRAAdapter:
    """A validated adapter. ``weights[(layer, module)] = (A [r, in], B_scaled [out, r])``."""

    name: str
    path: str
    content_hash: str  # blake2b of the config and every tensor: same bytes, same hash
    weights: Mapping[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]

    @property
    def ranks(self) -> dict[tuple[int, str], int]:
        return {key: a.shape[0] for key, (a, _) in self.weights.items()}

    @property
    def max_rank(self) -> int:
        return max(a.shape[0] for a, _ in self.weights.values())


def load_peft_adapter(name: str, path: str | Path, spec: LoRABaseSpec, max_lora_rank: int) -> LoRAAdapter:
    """Load and validate the adapter in directory ``path``; AdapterError says what is wrong."""
    directory = Path(path).expanduser()
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterError(f"adapter {name!r}: no {CONFIG_FILE} in {directory}")
    config_bytes = config_path.read_bytes()
    try:
        config = json.loads(config_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterError(f"adapter {name!r}: {config_path} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"adapter {name!r}: {config_path} must hold a JSON object")
    _check_config(name, config)
    tensors = _read_tensors(name, directory)
    weights = _build_weights(name, config, tensors, spec, max_lora_rank)
    return LoRAAdapter(
        name=name,
        path=str(directory),
        content_hash=_content_hash(config_bytes, tensors),
        weights=types.MappingProxyType(weights),
    )


def _check_config(name: str, config: dict[str, Any]) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterError(f"adapter {name!r}: peft_type {peft_type!r} is not LoRA")
    for key, message in _REFUSED_FLAGS.items():
        if config.get(key):
            raise AdapterError(f"adapter {name!r}: {message} ({key}={config[key]!r})")
    if config.get("bias", "none") != "none":
        raise AdapterError(
            f"adapter {name!r}: bias={config['bias']!r} (trained base-layer biases) is not supported; "
            "only bias='none' adapters load"
        )
    for key in ("r", "lora_alpha"):
        if key in config and not isinstance(config[key], (int, float)):
            raise AdapterError(f"adapter {name!r}: {key} must be a number, got {config[key]!r}")


def _read_tensors(name: str, directory: Path) -> dict[str, torch.Tensor]:
    safetensors_path, bin_path = directory / SAFETENSORS_FILE, directory / BIN_FILE
    try:
        if safetensors_path.is_file():
            from safetensors.torch import load_file

            return dict(load_file(str(safetensors_path)))
        if bin_path.is_file():
            loaded = torch.load(str(bin_path), map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
                raise ValueError("expected a dict of tensors")
            return dict(loaded)
    except Exception as error:  # any reader failure means the file is unusable
        path = safetensors_path if safetensors_path.is_file() else bin_path
        raise AdapterError(f"adapter {name!r}: cannot read {path}: {error}") from None
    raise AdapterError(f"adapter {name!r}: neither {SAFETENSORS_FILE} nor {BIN_FILE} in {directory}")


def _build_weights(
    name: str, config: dict[str, Any], tensors: dict[str, torch.Tensor], spec: LoRABaseSpec, max_rank: int
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    parents = spec.module_parents
    pairs: dict[tuple[int, str], dict[str, tuple[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            shape = tuple(tensor.shape)
            raise AdapterError(f"adapter {name!r}: tensor {key!r} {shape} {_why_unsupported(key)}")
        layer, parent, module, which = int(match[1]), match[2], match[3], match[4]
        if parents.get(module) != parent:
            raise AdapterError(
                f"adapter {name!r}: tensor {key!r} targets {parent}.{module}, which is not one of the "
                f"supported modules {sorted(parents)}"
            )
        if layer >= spec.num_layers:
            raise AdapterError(
                f"adapter {name!r}: tensor {key!r} is for layer {layer} but the base model has "
                f"{spec.num_layers} layers"
            )
        pairs.setdefault((layer, module), {})[which] = (key, tensor)
    if not pairs:
        raise AdapterError(f"adapter {name!r}: the weights file holds no LoRA tensors")

    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    default_rank = int(config.get("r", 8))
    default_alpha = float(config.get("lora_alpha", default_rank))
    weights = {}
    for (layer, module), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            key = next(iter(pair.values()))[0]
            raise AdapterError(f"adapter {name!r}: tensor {key!r} has no matching lora_A/lora_B partner")
        (a_key, a), (b_key, b) = pair["A"], pair["B"]
        module_key = f"model.layers.{layer}.{parents[module]}.{module}"
        rank = int(_pattern_value(rank_pattern, module_key, default_rank))
        alpha = float(_pattern_value(alpha_pattern, module_key, default_alpha))
        in_features, out_features = spec.module_dims[module]
        if tuple(a.shape) != (rank, in_features):
            raise AdapterError(
                f"adapter {name!r}: tensor {a_key!r} has shape {tuple(a.shape)}, expected "
                f"(r={rank}, in_features={in_features}) for the base model's {module}"
            )
        if tuple(b.shape) != (out_features, rank):
            raise AdapterError(
                f"adapter {name!r}: tensor {b_key!r} has shape {tuple(b.shape)}, expected "
                f"(out_features={out_features}, r={rank}) for the base model's {module}"
            )
        if rank > max_rank:
            raise AdapterError(
                f"adapter {name!r}: tensor {a_key!r} has rank {rank} > max_lora_rank={max_rank}; "
                "raise max_lora_rank"
            )
        if rank == 0:
            continue
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        weights[(layer, module)] = (
            a.detach().to(torch.float32).contiguous(),
            (b.detach().to(torch.float32) * scale).contiguous(),
        )
    return weights


def _pattern_value(patterns: dict[str, Any], module_key: str, default: Any) -> Any:
    # PEFT's rule: the first pattern that matches the end of the module name on a dot boundary.
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module_key):
            return value
    return default


def _why_unsupported(key: str) -> str:
    if "lora_magnitude_vector" in key:
        return "is a DoRA magnitude; DoRA is not supported"
    if "lora_embedding" in key or "embed_tokens" in key:
        return "is an embedding LoRA/module; only the attention and MLP linear layers are supported"
    if "lm_head" in key:
        return "targets lm_head; only the attention and MLP linear layers are supported"
    if key.endswith(".bias"):
        return "is a bias; LoRA and base-layer biases are not supported"
    return "is not a LoRA A/B weight of a decoder-layer linear module"


def _content_hash(config_bytes: bytes, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(config_bytes)
    for key in sorted(tensors):
        tensor = tensors[key].detach().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
