"""Scheduler: decides each step which requests compute how many tokens, under a token budget.

Running requests go first (decodes and unfinished prefill chunks), then waiting ones are admitted
while the budget, ``max_num_seqs`` and the KV pool allow. When a running request cannot get a
block, the lowest-ranked running request is preempted and recomputed later. ``update`` applies a
step's sampled tokens, runs the stop checks and frees finished requests' blocks."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.registry import AdapterRegistry
from loomlm.engine.config import SchedulerConfig
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.outputs import RunnerOutput, ScheduledChunk, SchedulerOutput
from loomlm.engine.request import Request, RequestStatus
from loomlm.engine.structured_output import StructuredOutputManager


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache: KVCacheManager,
        structured_output: StructuredOutputManager | None = None,
        adapters: AdapterRegistry | None = None,
    ) -> None:
        if config.max_model_len is None:
            raise ValueError("SchedulerConfig.max_model_len must be set: use config.resolved(model_max_len)")
        self.config = config
        self.kv_cache = kv_cache
        self.structured_output = structured_output
        # LoRA device slots: an admitted request pins its adapter's slot until it finishes or is
        # preempted, so at most max_loras distinct adapters run in any step.
        self.adapters = adapters
        self._by_priority = config.policy == "priority"
        self.requests: dict[str, Request] = {}
        self.running: list[Request] = []
        # Heap of (sort key, insertion count, request): the count keeps equal keys FIFO.
        self._waiting: list[tuple[tuple[int, float, int], int, Request]] = []
        self._num_pushed = 0
        self._finished_since_last_step: list[str] = []
        self._failed: list[Request] = []  # failed before running (see take_failed)
        self.num_preemptions = 0  # lifetime count, for stats

    # -- intake -------------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the engine")
        self.requests[request.request_id] = request
        request.status = RequestStatus.WAITING
        self._push_waiting(request)

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
        was_waiting = request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)
        request.status = status
        request.error = error
        if request.detokenizer is not None:
            request.detokenizer.flush()  # a character cut off by max_tokens is shown as decoded
        if was_waiting:
            self._waiting = [entry for entry in self._waiting if entry[2] is not request]
            heapq.heapify(self._waiting)
        elif request in self.running:
            self.running.remove(request)
        self.kv_cache.free(request)
        self._release_adapter(request)
        self.requests.pop(request.request_id, None)
        self._finished_since_last_step.append(request.request_id)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # -- one step -----------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput(finished_request_ids=self._finished_since_last_step)
        self._finished_since_last_step = []
        budget = self.config.max_num_batched_tokens

        # Running requests, best-ranked first, so preemption takes from the tail.
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
                    self._fail_unscheduled(request, self._too_long_message(request))
                    break
                self._preempt(victim, output)
                if victim is request:
                    break
                block_ids = self.kv_cache.allocate(request, num_new)
            if block_ids is None:
                if request.is_finished:
                    continue  # it left self.running; the same index now holds the next request
                break
            output.chunks.append(_chunk(request, num_new, block_ids))
            budget -= num_new
            index += 1

        # Admit waiting requests unless this step had to preempt (the pool is tight). A request
        # that is not ready (grammar compiling, no adapter slot) is skipped, not waited behind.
        skipped: list[tuple[tuple[int, float, int], int, Request]] = []
        while self._waiting and budget > 0 and not output.preempted_request_ids:
            if len(self.running) >= self.config.max_num_seqs:
                break
            request = self._waiting[0][2]
            if not self._admissible(request) or not self._acquire_adapter(request):
                if not request.is_finished:
                    skipped.append(heapq.heappop(self._waiting))
                continue
            cached = self.kv_cache.find_cached_prefix(request) if request.num_computed_tokens == 0 else []
            num_cached_tokens = len(cached) * self.kv_cache.block_size
            remaining = request.num_tokens - request.num_computed_tokens - num_cached_tokens
            if not self.config.enable_chunked_prefill and remaining > budget:
                self._release_adapter(request)
                break
            num_new = min(remaining, budget)
            first_admission = request.status == RequestStatus.WAITING
            block_ids = self.kv_cache.allocate(request, num_new, cached)
            if block_ids is None:
                self._release_adapter(request)
                break
            heapq.heappop(self._waiting)
            if first_admission:
                request.num_cached_tokens = num_cached_tokens
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            output.chunks.append(_chunk(request, num_new, block_ids))
            budget -= num_new
        for entry in skipped:
            heapq.heappush(self._waiting, entry)

        output.num_scheduled_tokens = self.config.max_num_batched_tokens - budget
        return output

    def _admissible(self, request: Request) -> bool:
        """Whether a waiting request can be admitted now (its grammar, if any, is activated); one
        that can never run is finished."""
        if self.structured_output is not None:
            ready = self.structured_output.activate(request)
            if isinstance(ready, str):  # its grammar failed to compile: only this request fails
                self._fail_unscheduled(request, ready)
                return False
            if not ready:
                return False
        return True

    def _fail_unscheduled(self, request: Request, message: str) -> None:
        self.finish(request, RequestStatus.FINISHED_ERROR, message)
        self._failed.append(request)

    def take_failed(self) -> list[Request]:
        """Requests that ``schedule`` finished with an error (they produce no token, so ``update``
        does not report them); the engine turns them into outputs."""
        failed, self._failed = self._failed, []
        return failed

    def _acquire_adapter(self, request: Request) -> bool:
        """Pin a device slot for the request's adapter. False when every slot is pinned by running
        requests (it waits; others go ahead) or the adapter can no longer be read (it fails)."""
        if request.adapter is None or request.adapter_slot is not None:
            return True
        if self.adapters is None:
            self._fail_unscheduled(request, "LoRA is not enabled in this engine")
            return False
        try:
            request.adapter_slot = self.adapters.acquire_slot(request.adapter)
        except AdapterError as error:
            self._fail_unscheduled(request, str(error))
            return False
        return request.adapter_slot is not None

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
        self._push_waiting(request)
        output.preempted_request_ids.append(request.request_id)

    def _push_waiting(self, request: Request) -> None:
        self._num_pushed += 1
        heapq.heappush(self._waiting, (request.sort_key(self._by_priority), self._num_pushed, request))

    def _too_long_message(self, request: Request) -> str:
        return (
            f"request needs {request.num_tokens} tokens of KV cache but the pool holds "
            f"{self.kv_cache.max_tokens_in_pool()}; raise kv_cache_bytes/num_blocks or lower max_tokens"
        )

    # -- results ------------------------------------------------------------------------------
    def update(self, scheduler_output: SchedulerOutput, runner_output: RunnerOutput) -> list[Request]:
        """Advance counters, append sampled tokens, apply stop checks. Returns the requests that
        produced a token this step (finished ones included), in sampling-row order."""
        for chunk in scheduler_output.chunks:
            if not chunk.request.is_finished:
                chunk.request.num_computed_tokens = chunk.end_position
        updated = []
        logprobs = runner_output.logprobs
        for row, (request_id, token_id) in enumerate(
            zip(runner_output.request_ids, runner_output.sampled_token_ids, strict=True)
        ):
            request = self.requests.get(request_id)
            if request is None or request.is_finished:
                continue
            if token_id < 0:
                self.finish(request, RequestStatus.FINISHED_ERROR, "no token is allowed at this point")
                updated.append(request)
                continue
            request.append_output_token(token_id)
            grammar = request.grammar
            if grammar is not None and not grammar.accept_token(token_id):
                message = f"token {token_id} is not allowed by the request's grammar"
                self.finish(request, RequestStatus.FINISHED_ERROR, message)
                updated.append(request)
                continue
            if request.logprobs is not None and logprobs is not None and logprobs[row] is not None:
                request.logprobs.append(logprobs[row])
            status = self._stop_status(request, token_id)
            if grammar is not None and grammar.is_terminated():
                # Complete output (even on the max_tokens-th token): the grammar ends the request.
                status = RequestStatus.FINISHED_STOPPED
            if status is not None:
                self.finish(request, status)
            updated.append(request)
        return updated

    def _stop_status(self, request: Request, token_id: int) -> RequestStatus | None:
        params = request.sampling_params
        num_output = request.num_output_tokens
        stop_string = request.detokenizer.update([token_id]) if request.detokenizer else None
        if num_output >= params.min_tokens:
            if token_id == request.eos_token_id and not params.ignore_eos:
                return RequestStatus.FINISHED_STOPPED
            if token_id in params.stop_token_ids:
                request.stop_reason = token_id
                return RequestStatus.FINISHED_STOPPED
            if stop_string is not None:
                request.stop_reason = stop_string
                return RequestStatus.FINISHED_STOPPED
        if num_output >= params.max_tokens or request.num_tokens >= self.config.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None


def _chunk(request: Request, num_new: int, block_ids: list[int]) -> ScheduledChunk:
    start = request.num_computed_tokens
    return ScheduledChunk(request, start, num_new, block_ids, samples=start + num_new == request.num_tokens)
