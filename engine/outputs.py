"""Contracts between stages, and the only channel between them: what the scheduler plans
(``SchedulerOutput``), what the sampler returns for it (``SamplerOutput``) and what a step hands
the caller (``RequestOutput``). Plain dataclasses, so each stage is tested alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loomlm.engine.request import Request


@dataclass(slots=True)
class ScheduledChunk:
    """One request's share of a step: tokens ``[start_position, start_position + num_tokens)``
    of ``request.all_token_ids`` are computed, their KV written into ``block_ids``."""

    request: Request
    start_position: int
    num_tokens: int
    block_ids: list[int]
    # A chunk that reaches the end of the known tokens produces the next token.
    samples: bool

    @property
    def end_position(self) -> int:
        return self.start_position + self.num_tokens


@dataclass(slots=True)
class SchedulerOutput:
    """One step's plan. ``failed`` requests were finished with an error while scheduling (grammar
    compile error, unreadable adapter, too long for the KV pool): they produce no token and leave
    through this step's outputs."""

    chunks: list[ScheduledChunk] = field(default_factory=list)
    # Sum of the chunks' num_tokens: the runner fills this many rows of its input buffers.
    num_scheduled_tokens: int = 0
    preempted: list[Request] = field(default_factory=list)
    failed: list[Request] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.chunks

    @property
    def sampling_chunks(self) -> list[ScheduledChunk]:
        return [c for c in self.chunks if c.samples]


@dataclass(slots=True)
class Logprob:
    logprob: float
    rank: int
    decoded_token: str | None = None


@dataclass(slots=True)
class SamplerOutput:
    """One sampled token per row of ``SchedulerOutput.sampling_chunks``, in that order; -1 where the
    row had no allowed token (its request fails, the batch goes on)."""

    sampled_token_ids: list[int] = field(default_factory=list)
    # Per row: {token_id: Logprob} holding the sampled token and the top-n, or None where the row did
    # not ask; None altogether when no row asked.
    logprobs: list[dict[int, Logprob] | None] | None = None


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float | None = None
    # Structured output, once finished: the typed value (a model instance, dict, string or the chosen
    # option), or None with ``parse_error`` saying why (stopped at max_tokens, failed validation...).
    parsed: Any = None
    parse_error: str | None = None
    # Requests with tools (``LLM.chat(tools=...)``), once finished: the ``ToolCall``s in the text
    # (``text`` then holds the text outside them; finish reason ``tool_calls`` when there is one).
    tool_calls: list[Any] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    """What a caller gets for one prompt: ``n`` completions, in order."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    error: str | None = None
