"""Contracts between stages, and the only channel between them: what the scheduler plans
(``SchedulerOutput``), the arrays the model runs on (``ModelInput``), what the sampler returns
(``SamplerOutput``) and what a step hands the caller (``RequestOutput``). Plain dataclasses, so
each stage is tested alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

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
class ModelInput:
    """One step's flat batch as host arrays (`InputBuilder` builds it from a SchedulerOutput): all
    an executor needs, and nothing that refers to a Request, so it crosses to worker processes
    as it is. The arrays may be views of the builder's buffers, valid until the next step."""

    input_ids: np.ndarray  # [num_tokens] int64
    positions: np.ndarray  # [num_tokens] int64
    slot_mapping: np.ndarray  # [num_tokens] int64: where each token's KV goes
    block_tables: np.ndarray  # [num_seqs, max_blocks] int32
    seq_lens: np.ndarray  # [num_seqs] int32: context length including this step's tokens
    query_start_loc: np.ndarray  # [num_seqs + 1] int32
    max_query_len: int
    max_seq_len: int
    logits_indices: np.ndarray  # [num_sampling_rows] int64, in sampling_chunks order
    # Adapter slot of each token (-1: none); None when no token of the step has an adapter.
    token_slots: np.ndarray | None = None

    @property
    def num_sampling_rows(self) -> int:
        return int(self.logits_indices.shape[0])


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
