"""Contracts between stages: what the scheduler hands the runner, what the runner hands back,
and what a step hands the caller. Plain dataclasses, so each stage is tested alone."""

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
    chunks: list[ScheduledChunk] = field(default_factory=list)
    num_scheduled_tokens: int = 0
    preempted_request_ids: list[str] = field(default_factory=list)
    # Requests that finished (or were aborted) since the previous step; the runner drops their state.
    finished_request_ids: list[str] = field(default_factory=list)

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
class RunnerOutput:
    """Results for the sampling rows of a step, in ``SchedulerOutput.sampling_chunks`` order."""

    request_ids: list[str]
    sampled_token_ids: list[int]
    # Per row: {token_id: Logprob} holding the sampled token and the top-n, or None.
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
