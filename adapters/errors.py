"""AdapterError: an adapter cannot be loaded, validated or resolved. A ValueError, so intake code that
turns ValueErrors into per-prompt error outputs handles it too."""

from __future__ import annotations


class AdapterError(ValueError):
    """A LoRA adapter is unknown, unreadable, or does not fit the base model (the message says which)."""
