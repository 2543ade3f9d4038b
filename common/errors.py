"""RequestError: the family of errors that belong to one request (bad prompt, bad parameters,
unknown adapter, unusable response format). The engine and the SDK turn these, and only these, into
a per-request error output; any other exception is a bug and propagates."""

from __future__ import annotations


class RequestError(ValueError):
    """One request cannot run as asked; the message says what to change."""


class InvalidPromptError(RequestError):
    """The prompt is empty, or holds token ids outside the model's vocabulary."""


class PromptTooLongError(RequestError):
    """The prompt does not fit the model's context (or the KV cache)."""


class InvalidParamsError(RequestError):
    """The sampling parameters do not fit this model (e.g. a stop token id outside its vocabulary)."""


class QueueFullError(RequestError):
    """The waiting queue is at its bound (AsyncLLM's ``max_waiting``): nothing was queued; retry
    later (a server answers 429)."""
