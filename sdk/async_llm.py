"""AsyncLLM: the asyncio front of the engine, for servers. Requests from any number of coroutines
share one continuously batched engine, stepped by its own thread (``EngineLoop``), so the event loop
never waits on a forward. Streams (``generate_stream``, ``chat_stream``) yield per-step deltas; the
coroutines ``generate``, ``chat`` and ``extract`` mirror the offline ``LLM`` and reuse its helpers
(prompts, tools, extraction)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from loomlm.adapters.registry import AdapterRef
from loomlm.async_batch import AsyncBatchAPI
from loomlm.async_engine_loop import EngineLoop, EngineStoppedError, LoopState, OutputSink
from loomlm.async_outputs import ChatDeltaTracker, ChatStreamChunk, DeltaTracker, StreamOutput
from loomlm.async_requests import Intake, PendingRequest, RequestStream, chat_intake, prompt_intake
from loomlm.engine.engine import LLMEngine
from loomlm.engine.outputs import RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.llm import LLM
from loomlm.lora import AdapterChoice
from loomlm.prompts import Conversation, PromptInput

T = TypeVar("T")


class AsyncLLM(AsyncBatchAPI):
    """A model served to asyncio code. ``AsyncLLM()`` loads the default model, ``AsyncLLM(path,
    **options)`` takes the options of ``LLM``. Use ``async with`` or ``await shutdown()``."""

    def __init__(self, model: str | None = None, *, max_waiting: int | None = None, **engine_options: Any):
        """``engine_options``: those of ``LLM`` (scheduler and KV sizes, LoRA, grammar backend, ...).
        Loading the model blocks: create the AsyncLLM before serving. ``max_waiting``: the most
        requests waiting in the engine's queue; one more raises QueueFullError (None: unbounded)."""
        EngineLoop.check_max_waiting(max_waiting)
        # LLM.__init__ is the one place that maps these options to an EngineConfig.
        self._core = EngineLoop(LLM(model, **engine_options).engine, max_waiting)

    @classmethod
    def from_engine(cls, engine: LLMEngine, *, max_waiting: int | None = None) -> AsyncLLM:
        """Serve an engine built elsewhere. The AsyncLLM owns it from now on: only its thread steps
        it, and ``shutdown`` closes it."""
        llm = cls.__new__(cls)
        llm._core = EngineLoop(engine, max_waiting)
        return llm

    # -- state ----------------------------------------------------------------------------------
    @property
    def engine(self) -> LLMEngine:
        """The engine, for its configuration; while the AsyncLLM runs only its thread may call it."""
        return self._core.engine

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer; the engine thread encodes with it, so encode with a copy."""
        return self._core.engine.tokenizer

    @property
    def is_running(self) -> bool:
        """Admitting new requests (not draining, shut down or failed, and the model's worker
        processes, if any, all up: a health check sees a dead worker before a request does)."""
        return (
            self._core.state is LoopState.RUNNING
            and self._core.is_alive
            and self._core.engine.executor.is_alive
        )

    @property
    def is_draining(self) -> bool:
        return self._core.state is LoopState.DRAINING

    @property
    def errored(self) -> BaseException | None:
        """The exception that killed the engine loop, or None."""
        return self._core.error

    # -- streams --------------------------------------------------------------------------------
    async def submit(
        self,
        prompt: PromptInput,
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        priority: int = 0,
        adapter: AdapterChoice = None,
    ) -> RequestStream[StreamOutput]:
        """Queue one prompt (text or token ids) and return its stream once it is queued: a bad
        prompt, params, adapter or response format raises its RequestError here, a full queue
        QueueFullError, a stopped AsyncLLM EngineStoppedError. Iterate the stream for
        ``StreamOutput``s; leave early with ``aclose()`` or ``async with``, which aborts it."""
        params = _one_params(sampling_params)
        pending = self._enqueue(prompt_intake(prompt, params, priority, adapter), request_id)
        return await self._admit(pending, lambda: DeltaTracker(params).update)

    async def generate_stream(
        self,
        prompt: PromptInput,
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        priority: int = 0,
        adapter: AdapterChoice = None,
    ) -> AsyncIterator[StreamOutput]:
        """``StreamOutput``s of one prompt, one per engine step that changed it (a slow consumer gets
        the newest, with all text since its previous one); the last is finished. Errors as in
        ``submit``; breaking out, closing or cancelling the consumer aborts the request."""
        stream = await self.submit(
            prompt, sampling_params, request_id=request_id, priority=priority, adapter=adapter
        )
        async with stream:
            async for item in stream:
                yield item

    async def submit_chat(
        self,
        messages: Conversation,
        sampling_params: SamplingParams | None = None,
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = "auto",
        parallel_tool_calls: bool = True,
        add_generation_prompt: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
        request_id: str | None = None,
        priority: int = 0,
        adapter: AdapterChoice = None,
    ) -> RequestStream[ChatStreamChunk]:
        """``submit`` for one conversation through the chat template, with ``tools`` as in
        ``LLM.chat`` (ToolDefinitionError for a malformed tool). The stream yields ``ChatStreamChunk``s."""
        params = _one_params(sampling_params)
        intake = chat_intake(
            messages, params, priority, adapter, add_generation_prompt, chat_template_kwargs or {},
            tools, tool_choice, parallel_tool_calls,
        )  # fmt: skip
        # The tracker is made once queued: the engine thread fills in the params and tools then.
        pending = self._enqueue(intake, request_id)
        return await self._admit(pending, lambda: ChatDeltaTracker(intake.params, intake.tools).update)

    async def chat_stream(
        self, messages: Conversation, sampling_params: SamplingParams | None = None, **options: Any
    ) -> AsyncIterator[ChatStreamChunk]:
        """``ChatStreamChunk``s of one conversation (``options`` as in ``submit_chat``): per choice
        the content and tool-call deltas, and the finish reason on its last chunk."""
        stream = await self.submit_chat(messages, sampling_params, **options)
        async with stream:
            async for chunk in stream:
                yield chunk

    # -- control --------------------------------------------------------------------------------
    async def abort(self, request_id: str) -> bool:
        """Abort a request in flight (its consumer gets the finished ``abort`` output); False if it
        was not in flight."""
        return bool(await asyncio.wrap_future(self._core.abort([request_id])))

    async def load_adapter(self, name: str, path: str) -> AdapterRef:
        """``LLM.load_adapter``, run on the engine thread between two steps (reading the files pauses
        generation that long). Loads run in call order there, so loads of one name never interleave."""
        return await self._on_engine(lambda engine: engine.load_adapter(name, str(path)))

    async def unload_adapter(self, name: str) -> None:
        """New requests can no longer use ``name``. It does not wait for requests that use it: each
        holds its own reference to the weights, and the registry frees the adapter's slot and memory
        when the last of them finishes."""
        await self._on_engine(lambda engine: engine.unload_adapter(name))

    async def list_adapters(self) -> list[AdapterRef]:
        return await self._on_engine(lambda engine: engine.list_adapters())

    async def stats(self) -> dict[str, Any]:
        """The engine's stats (running, waiting, KV cache usage, preemptions), read between steps."""
        if not self._core.is_alive:  # nothing else touches the engine any more
            return self._core.engine.stats()
        return await self._on_engine(lambda engine: engine.stats())

    def stop_admitting(self) -> None:
        """Drain: new requests raise EngineStoppedError; those in flight go on (a server's SIGTERM)."""
        self._core.stop_admitting()

    async def shutdown(self, drain_timeout: float = 0.0) -> None:
        """Stop admitting, give requests in flight up to ``drain_timeout`` seconds to finish, abort
        the rest (their consumers get the finished ``abort`` output), stop the engine thread and
        close the engine. Safe to call again."""
        self._core.stop_admitting()
        if drain_timeout > 0 and self._core.is_alive:
            await asyncio.to_thread(self._core.wait_idle, drain_timeout)
        with contextlib.suppress(EngineStoppedError):
            await asyncio.wrap_future(self._core.abort_all())
        await asyncio.to_thread(self._core.stop)

    async def __aenter__(self) -> AsyncLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # -- internals ------------------------------------------------------------------------------
    async def _on_engine(self, fn: Callable[[LLMEngine], T]) -> T:
        return await asyncio.wrap_future(self._core.call(fn))

    def _enqueue(self, intake: Intake, request_id: str | None = None) -> PendingRequest:
        request_id = request_id if request_id is not None else uuid.uuid4().hex
        sink = OutputSink(asyncio.get_running_loop())
        added = asyncio.wrap_future(self._core.add(request_id, sink, intake.prepare))
        return PendingRequest(request_id, sink, added, intake)

    async def _admit(
        self, pending: PendingRequest, make_tracker: Callable[[], Callable[[RequestOutput], Any]]
    ) -> RequestStream:
        """The stream of a request once the engine thread has queued it (its error raised here)."""
        try:
            await pending.added
        except asyncio.CancelledError:
            self._abandon(pending)  # the add may have run already
            raise
        return RequestStream(pending.request_id, pending.sink, self._core, make_tracker())

    def _abandon(self, pending: PendingRequest) -> None:
        """Abort a request its caller no longer waits for, queued or not."""
        if not pending.added.done():
            pending.added.cancel()  # not run yet: the engine thread skips it
        elif not pending.added.cancelled():
            pending.added.exception()  # seen: asyncio would log it as never retrieved
        with contextlib.suppress(EngineStoppedError):
            self._core.abort([pending.request_id], pending.sink)


def _one_params(params: SamplingParams | None) -> SamplingParams:
    if params is None:
        return SamplingParams()
    if not isinstance(params, SamplingParams):
        raise TypeError(f"expected SamplingParams, got {type(params).__name__}")
    return params
