"""Request: the one object carried from intake to output, with counters rather than phase flags."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

    from loomlm.adapters.registry import AdapterRef
    from loomlm.engine.detokenizer import IncrementalDetokenizer
    from loomlm.engine.sampling_params import SamplingParams
    from loomlm.grammar.specs import GrammarSpec
    from loomlm.grammar.state import GrammarState


class RequestStatus(enum.IntEnum):
    """Ordered: everything at or above FINISHED_STOPPED is finished."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5
    FINISHED_ERROR = 6

    @property
    def is_finished(self) -> bool:
        # A module constant: reading an enum member costs ~0.3 us, and this runs per request per step.
        return self >= _FIRST_FINISHED

    @property
    def finish_reason(self) -> str | None:
        return _FINISH_REASONS.get(self)


_FIRST_FINISHED = RequestStatus.FINISHED_STOPPED
_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
    RequestStatus.FINISHED_ERROR: "error",
}


@dataclass(slots=True, eq=False)
class Request:
    """One sequence to generate. ``num_computed_tokens`` (tokens whose KV is in the cache) moves
    toward ``num_tokens`` (prompt + generated); a step schedules the difference, in chunks.
    Preemption resets ``num_computed_tokens`` to 0 (recompute); a prefix-cache hit advances it."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_id: int | None = None
    priority: int = 0  # lower value is served first under the priority policy
    arrival_time: float = field(default_factory=time.monotonic)
    # ``arrival_index`` breaks ties in FCFS and priority ordering deterministically.
    arrival_index: int = 0
    seed_offset: int = 0  # n>1 fan-out: child i samples with seed + i
    # Mixed into prefix-cache block hashes: KV computed under other keys (an adapter) is never shared.
    extra_hash_keys: tuple = ()
    # The LoRA adapter this request runs with (None: the base model); its content hash goes into
    # extra_hash_keys. ``adapter_slot``: the device slot it pins while admitted, else None.
    adapter: AdapterRef | None = None
    adapter_slot: int | None = None

    status: RequestStatus = RequestStatus.WAITING
    all_token_ids: list[int] = field(init=False)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    num_preemptions: int = 0
    block_hashes: list[int] = field(default_factory=list)  # hashes of full blocks, chained
    logprobs: list[dict[int, Any]] | None = None
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    error: str | None = None
    detokenizer: IncrementalDetokenizer | None = None
    # Structured output: the resolved format, its compile Future, then the live automaton state.
    grammar_spec: GrammarSpec | None = None
    grammar_backend: str | None = None  # the backend that prepared it ("llguidance", "outlines")
    grammar_future: Future | None = None
    grammar: GrammarState | None = None
    # Timestamps (time.monotonic) for the latency metrics (engine/metrics.py), set once each by the
    # scheduler (first admission) and the engine (after each step that gave the request tokens).
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    num_recorded_output_tokens: int = 0  # output tokens already counted in the metrics

    def __post_init__(self) -> None:
        self.all_token_ids = list(self.prompt_token_ids)
        if self.adapter is not None:
            self.extra_hash_keys = (*self.extra_hash_keys, ("lora", self.adapter.content_hash))
        if self.sampling_params.logprobs is not None:
            self.logprobs = []

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[len(self.prompt_token_ids) :]

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def finish_reason(self) -> str | None:
        return self.status.finish_reason

    def append_output_token(self, token_id: int) -> None:
        self.all_token_ids.append(token_id)

    def sort_key(self, by_priority: bool) -> tuple[int, float, int]:
        return (self.priority if by_priority else 0, self.arrival_time, self.arrival_index)
