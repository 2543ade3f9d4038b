"""What an adapter is validated against and placed by: `LoRABaseSpec`, and the `PackedLinear` type.

A model family declares its packing (which Hugging Face / PEFT linear layers its forward fuses
into one matmul, in output-column order, under which decoder-layer submodule) as a tuple of
`PackedLinear`; the Llama family's is `loomlm.engine.models.arch.LLAMA_PACKING`. The engine builds
the spec (`LlamaArch.lora_spec`) with that packing and every part's size, and this package reads
the packing only from the spec: it must never import the engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class PackedLinear:
    """One fused linear layer of the forward: ``parts`` are the checkpoint/PEFT linear layers packed
    into its output columns, in order, all under decoder-layer submodule ``submodule``."""

    name: str
    submodule: str
    parts: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class LoRABaseSpec:
    model_type: str
    num_layers: int
    hidden_size: int
    packing: tuple[PackedLinear, ...]  # the base model's fused linear layers
    module_dims: dict[str, tuple[int, int]]  # PEFT module name -> (in_features, out_features)

    def __post_init__(self) -> None:
        names = [packed.name for packed in self.packing]
        parts = [part for packed in self.packing for part in packed.parts]
        if len(set(names)) != len(names) or len(set(parts)) != len(parts):
            raise ValueError(f"packing repeats a fused layer or a part: {self.packing}")
        # Every packed part needs a size, and a size for anything else would never be used.
        if set(self.module_dims) != set(parts):
            raise ValueError(f"module_dims covers {sorted(self.module_dims)}, not {sorted(parts)}")

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Fused layer name -> its parts, in output-column order."""
        return {packed.name: packed.parts for packed in self.packing}

    @property
    def module_parents(self) -> dict[str, str]:
        """Part (PEFT module) name -> the decoder-layer submodule that holds it."""
        return {part: packed.submodule for packed in self.packing for part in packed.parts}
