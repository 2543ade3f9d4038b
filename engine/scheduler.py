"""Scheduler: decides each step which requests compute how many tokens, under a token budget.

Running requests go first (decodes and unfinished prefill chunks), then waiting ones are admitted
while the budget, ``max_num_seqs`` and the KV pool allow. When a running request cannot get a
block, the lowest-ranked running request is preempted and recomputed later. ``update`` applies a
step's sampled tokens (the detokenizer and the grammar advance here, once per token), asks the
StopChecker whether each request ends, and frees finished requests' blocks."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterable

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.peft_loader import LoRAAdapter
from loomlm.adapters.registry import AdapterRegistry
from loomlm.engine.config import SchedulerConfig
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.outputs import SamplerOutput, ScheduledChunk, SchedulerOutput
from loomlm.engine.request import Request, RequestStatus
from loomlm.engine.request_queue import make_request_queue
from loomlm.engine.stop_checker import StopChecker
from loomlm.engine.structured_output import GrammarStatus, StructuredOutputManager

logger = logging.getLogger(__name__)


class Readiness(enum.Enum):
    """Whether a waiting request can be admitted now."""

    READY = "ready"
    NOT_READY = "not ready"  # grammar compiling, or every adapter slot pinned: it waits, others go on
    FAILED = "failed"  # it can never run; it was finished with an error


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache: KVCacheManager,
        structured_output: StructuredOutputManager | None = None,
        adapters: AdapterRegistry | None = None,
        *,
        jump_forward: bool = False,
    ) -> None:
        if config.max_model_len is None:
            raise ValueError("SchedulerConfig.max_model_len must be set: use config.resolved(model_max_len)")
        self.config = config
        self.kv_cache = kv_cache
        self.structured_output = structured_output
        # LoRA device slots: an admitted request pins its adapter's slot until it finishes or is
        # preempted, so at most max_loras distinct adapters run in any step.
        self.adapters = adapters
        self.stop_checker = StopChecker(config.max_model_len)
        # Append the tokens a grammar forces after each sampled one (not for requests that want
        # logprobs: a forced token has none).
        self.jump_forward = jump_forward
        self._by_priority = config.policy == "priority"
        self.requests: dict[str, Request] = {}
        self.running: list[Request] = []
        self.waiting = make_request_queue(config.policy)
        self.num_preemptions = 0  # lifetime count, for stats

    # -- intake -------------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the engine")
        self.requests[request.request_id] = request
        request.status = RequestStatus.WAITING
        self.waiting.add(request)

    def abort_requests(self, request_ids: Iterable[str]) -> list[Request]:
        aborted = []
        for request_id in request_ids:
            request = self.requests.get(request_id)
            if request is not None and not request.is_finished:
                self.finish(request, RequestStatus.FINISHED_ABORTED)
                aborted.append(request)
        return aborted

    def finish(self, request: Request, status: RequestStatus, error: str | None = None) -> None:
        """Mark a request finished and release everything it holds."""
        if request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED):
            self.waiting.remove(request)
        elif request.status == RequestStatus.RUNNING:
            self.running.remove(request)
        request.status = status
        request.error = error
        if request.detokenizer is not None:
            request.detokenizer.flush()  # a character cut off by max_tokens is shown as decoded
        self.kv_cache.free(request)
        self._release_adapter(request)
        self.requests.pop(request.request_id, None)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # -- one step -----------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        budget = self._schedule_running(output, budget)
        # Admit waiting requests unless this step had to preempt (the pool is tight).
        if not output.preempted:
            budget = self._schedule_waiting(output, budget)
        output.num_scheduled_tokens = self.config.max_num_batched_tokens - budget
        return output

    def _schedule_running(self, output: SchedulerOutput, budget: int) -> int:
        # Best-ranked first, so preemption takes from the tail.
        self.running.sort(key=lambda r: r.sort_key(self._by_priority))
        index = 0
        while index < len(self.running) and budget > 0:
            request = self.running[index]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget)
            block_ids = self.kv_cache.allocate(request, num_new)
            while block_ids is None:
                victim = self.running[-1]
                if victim is request and index == 0:
                    # Alone and still out of blocks: the pool can never hold this sequence.
                    self._fail(request, self._too_long_message(request), output)
                    break
                self._preempt(victim, output)
                if victim is request:
                    break
                block_ids = self.kv_cache.allocate(request, num_new)
            if block_ids is None:
                if request.is_finished:
                    continue  # it left self.running; the same index now holds the next request
                break
            output.chunks.append(_chunk(request, request.num_computed_tokens, num_new, block_ids))
            budget -= num_new
            index += 1
        return budget

    def _schedule_waiting(self, output: SchedulerOutput, budget: int) -> int:
        # A request that is not ready is skipped, not waited behind; it keeps its place.
        skipped: list[Request] = []
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting.peek()
            readiness, adapter = self._readiness(request, output)
            if readiness is Readiness.FAILED:
                continue  # finished, and so removed from the queue
            if readiness is Readiness.NOT_READY:
                skipped.append(self.waiting.pop())
                continue
            cached = []
            if request.num_computed_tokens == 0:
                self.kv_cache.hash_full_blocks(request)
                cached = self.kv_cache.find_cached_prefix(request)
            num_cached_tokens = len(cached) * self.kv_cache.block_size
            remaining = request.num_tokens - request.num_computed_tokens - num_cached_tokens
            if not self.config.enable_chunked_prefill and remaining > budget:
                break
            num_new = min(remaining, budget)
            block_ids = self.kv_cache.allocate(request, num_new, cached)
            if block_ids is None:
                break
            # The KV blocks are secured: only now is an adapter slot taken (it cannot fail any more).
            if request.adapter is not None and request.adapter_slot is None:
                request.adapter_slot = self.adapters.acquire_slot(request.adapter, adapter)
            self.waiting.pop()
            if request.status == RequestStatus.WAITING:  # first admission only
                request.num_cached_tokens = num_cached_tokens
                request.first_scheduled_time = time.monotonic()  # ends its queue time (metrics)
            start = request.num_computed_tokens + num_cached_tokens
            request.num_computed_tokens = start
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            output.chunks.append(_chunk(request, start, num_new, block_ids))
            budget -= num_new
        self.waiting.prepend(skipped)
        return budget

    def _readiness(self, request: Request, output: SchedulerOutput) -> tuple[Readiness, LoRAAdapter | None]:
        """Whether a waiting request can be admitted now; one that can never run is finished. For a
        request whose adapter needs a slot, also the adapter's tensors (read here, so that a bad
        adapter fails before any KV block is taken)."""
        if self.structured_output is not None:
            status = self.structured_output.activate(request)
            if status is GrammarStatus.FAILED:
                self._fail(request, self.structured_output.compile_error(request), output)
                return Readiness.FAILED, None
            if status is GrammarStatus.COMPILING:
                return Readiness.NOT_READY, None
        if request.adapter is None or request.adapter_slot is not None:
            return Readiness.READY, None
        if self.adapters is None:
            self._fail(request, "LoRA is not enabled in this engine", output)
            return Readiness.FAILED, None
        if not self.adapters.slot_available(request.adapter):
            return Readiness.NOT_READY, None
        try:
            return Readiness.READY, self.adapters.adapter(request.adapter)
        except AdapterError as error:
            self._fail(request, str(error), output)
            return Readiness.FAILED, None

    def _fail(self, request: Request, message: str, output: SchedulerOutput) -> None:
        self.finish(request, RequestStatus.FINISHED_ERROR, message)
        output.failed.append(request)

    def _release_adapter(self, request: Request) -> None:
        if request.adapter_slot is not None and self.adapters is not None:
            self.adapters.release_slot(request.adapter_slot)
        request.adapter_slot = None

    def _preempt(self, request: Request, output: SchedulerOutput) -> None:
        self.running.remove(request)
        self.kv_cache.free(request)
        self._release_adapter(request)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        request.status = RequestStatus.PREEMPTED
        self.waiting.prepend([request])
        output.preempted.append(request)
        logger.info(
            "preempted request %s (%d tokens, preemption %d): out of KV blocks; it will be recomputed",
            request.request_id,
            request.num_tokens,
            request.num_preemptions,
        )

    def _too_long_message(self, request: Request) -> str:
        return (
            f"request needs {request.num_tokens} tokens of KV cache but the pool holds "
            f"{self.kv_cache.max_tokens_in_pool()}; raise kv_cache_bytes/num_blocks or lower max_tokens"
        )

    # -- results ------------------------------------------------------------------------------
    def update(self, scheduler_output: SchedulerOutput, sampler_output: SamplerOutput) -> list[Request]:
        """Advance counters, append sampled tokens, apply the stop check. Returns the requests this
        step changed: those that failed while scheduling, then those that produced a token (finished
        ones included), in sampling-row order."""
        for chunk in scheduler_output.chunks:
            if not chunk.request.is_finished:
                chunk.request.num_computed_tokens = chunk.end_position
        updated = list(scheduler_output.failed)
        logprobs = sampler_output.logprobs
        rows = zip(scheduler_output.sampling_chunks, sampler_output.sampled_token_ids, strict=True)
        for row, (chunk, token_id) in enumerate(rows):
            request = chunk.request
            if request.is_finished:
                continue
            updated.append(request)
            if token_id < 0:
                self.finish(request, RequestStatus.FINISHED_ERROR, "no token is allowed at this point")
                continue
            self._append_token(request, token_id, logprobs[row] if logprobs is not None else None)
            if self.jump_forward and request.grammar is not None and request.logprobs is None:
                # Forced tokens join the request now; the next step computes their KV in one chunk.
                for forced in request.grammar.forced_tokens() if not request.is_finished else ():
                    self._append_token(request, forced, None)
                    if request.is_finished:
                        break
        return updated

    def _append_token(self, request: Request, token_id: int, logprobs: dict | None) -> None:
        """One token into the request: grammar, token list, logprobs, text, then the stop check."""
        if self.structured_output is not None and not self.structured_output.advance(request, token_id):
            message = f"token {token_id} is not allowed by the request's grammar"
            self.finish(request, RequestStatus.FINISHED_ERROR, message)
            return
        request.append_output_token(token_id)
        if request.logprobs is not None and logprobs is not None:
            request.logprobs.append(logprobs)
        new_text = request.detokenizer.update([token_id]) if request.detokenizer is not None else ""
        decision = self.stop_checker.check(request, len(new_text))
        if decision is not None:
            request.stop_reason = decision.stop_reason
            if decision.text_end is not None:
                request.detokenizer.truncate(decision.text_end)
            self.finish(request, decision.status)


def _chunk(request: Request, start: int, num_new: int, block_ids: list[int]) -> ScheduledChunk:
    return ScheduledChunk(request, start, num_new, block_ids, samples=start + num_new == request.num_tokens)
