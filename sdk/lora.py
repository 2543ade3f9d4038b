"""LoRARequest (vLLM-style adapter requests), the per-prompt adapter argument of LLM.generate, and
resolving an adapter choice to a loaded adapter's name (shared by LLM and AsyncLLM)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loomlm.adapters.errors import AdapterError


@dataclass(frozen=True, slots=True)
class LoRARequest:
    """vLLM-style adapter request: the adapter in ``lora_path`` under ``lora_name``, loaded on
    first use (and reloaded when the same name comes with another path). ``lora_int_id`` is kept
    for compatibility; loomlm identifies loads itself."""

    lora_name: str
    lora_int_id: int
    lora_path: str


AdapterChoice = str | LoRARequest | None


def per_prompt_adapters(choice: Any, num_prompts: int) -> list[AdapterChoice] | None:
    if choice is None or isinstance(choice, (str, LoRARequest)):
        return None if choice is None else [choice] * num_prompts
    choices = list(choice)
    if len(choices) != num_prompts:
        raise ValueError(f"got {len(choices)} adapters for {num_prompts} prompts; give one or one each")
    for item in choices:
        if item is not None and not isinstance(item, (str, LoRARequest)):
            raise TypeError(f"an adapter is a name, a LoRARequest or None, got {type(item).__name__}")
    return choices


def resolve_adapter_choice(engine: Any, choice: AdapterChoice) -> str | None:
    """The adapter name a request runs with; a LoRARequest loads its adapter on first use. A
    LoRARequest naming a loaded adapter with another path is an AdapterError: it never reloads
    an adapter under running requests. ``engine``: the LLMEngine (LLM's, or AsyncLLM's on its thread)."""
    if not isinstance(choice, LoRARequest):
        return choice
    loaded = {ref.name: ref for ref in engine.list_adapters()}
    ref = loaded.get(choice.lora_name)
    if ref is None:
        engine.load_adapter(choice.lora_name, str(choice.lora_path))
    elif Path(ref.path).resolve() != Path(choice.lora_path).expanduser().resolve():
        raise AdapterError(
            f"adapter {choice.lora_name!r} is loaded from {ref.path}, but this LoRARequest names "
            f"{choice.lora_path}; use another lora_name, or unload_adapter({choice.lora_name!r}) first"
        )
    return choice.lora_name
