"""LoRARequest (vLLM-style adapter requests) and the per-prompt adapter argument of LLM.generate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
