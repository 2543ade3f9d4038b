"""AdapterError: an adapter cannot be loaded, validated or resolved. A RequestError, so intake code
that turns request errors into per-prompt error outputs handles it too."""

from __future__ import annotations

from loomlm.common.errors import RequestError


class AdapterError(RequestError):
    """A LoRA adapter is unknown, unreadable, or does not fit the base model (the message says which)."""
