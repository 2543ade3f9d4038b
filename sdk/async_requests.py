"""One AsyncLLM request on the event loop side: ``RequestStream`` (iterating its outputs, aborting it
when its consumer leaves) and the intake builders, which say what the engine thread runs to queue a
prompt or a conversation (the tokenizer and chat template run there, beside the engine that shares
the tokenizer)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from loomlm.async_engine_loop import EngineLoop, EngineStoppedError, OutputSink
from loomlm.engine.engine import LLMEngine
from loomlm.engine.outputs import RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.lora import AdapterChoice, resolve_adapter_choice
from loomlm.prompts import Conversation, PromptInput
from loomlm.tool_calls import ToolSet, prepare_tool_chats

S = TypeVar("S")


class RequestStream(Generic[S]):
    """A request in flight: an async iterator of its stream items (``StreamOutput`` or
    ``ChatStreamChunk``), the last one finished. A consumer that leaves early calls ``aclose()``
    (or uses ``async with``): the request is aborted, its KV blocks and adapter slot freed. A consumer
    cancelled while it waits for the next item aborts it too. If the engine loop fails, the waiting
    consumer gets its exception."""

    def __init__(
        self, request_id: str, sink: OutputSink, core: EngineLoop, track: Callable[[RequestOutput], S]
    ) -> None:
        self.request_id = request_id
        self._sink = sink
        self._core = core
        self._track = track
        self._done = False  # finished, failed or aborted: nothing more comes
        self._last: RequestOutput | None = None

    @property
    def finished(self) -> bool:
        return self._done

    def __aiter__(self) -> RequestStream[S]:
        return self

    async def __anext__(self) -> S:
        if self._done:
            raise StopAsyncIteration
        return self._track(await self._next_output())

    async def result(self) -> RequestOutput:
        """The finished output (the steps before it skipped, untracked). RuntimeError if the
        stream ended without one (cancelled, or the engine loop failed)."""
        if self._done:
            if self._last is None or not self._last.finished:
                raise RuntimeError(f"request {self.request_id!r} ended without a finished output")
            return self._last
        while True:
            output = await self._next_output()
            if output.finished:
                return output

    def cancel(self) -> None:
        """Abort the request unless it is over; returns at once (the engine thread does it)."""
        if self._done:
            return
        self._done = True
        # EngineStoppedError: the engine thread is gone, and the request with it.
        with contextlib.suppress(EngineStoppedError):
            self._core.abort([self.request_id], self._sink)

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> RequestStream[S]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    async def _next_output(self) -> RequestOutput:
        try:
            output = await self._sink.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        except BaseException:  # the engine loop failed: this request is over
            self._done = True
            raise
        self._last = output
        if output.finished:
            self._done = True
        return output


@dataclass
class Intake:
    """What the engine thread runs to queue one prompt: ``prepare(engine)`` returns the keyword
    arguments of ``engine.add_request``. ``prompt`` and ``params`` name the request in an error
    output; ``tools`` is filled on the engine thread for a chat with tools."""

    prompt: PromptInput
    params: SamplingParams
    prepare: Callable[[LLMEngine], dict] = field(repr=False)
    tools: ToolSet | None = None


def prompt_intake(
    prompt: PromptInput, params: SamplingParams, priority: int, adapter: AdapterChoice
) -> Intake:
    """A text or token-id prompt."""

    def prepare(engine: LLMEngine) -> dict:
        adapter_name = resolve_adapter_choice(engine, adapter)
        return {"prompt": prompt, "params": params, "priority": priority, "adapter": adapter_name}

    return Intake(prompt, params, prepare)


def chat_intake(
    conversation: Conversation,
    params: SamplingParams,
    priority: int,
    adapter: AdapterChoice,
    add_generation_prompt: bool,
    template_kwargs: dict[str, Any],
    tools: Any = None,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
) -> Intake:
    """One conversation through the chat template; with ``tools``, as ``LLM.chat`` renders and
    constrains them (``prepare_tool_chats``; a malformed tool raises ToolDefinitionError)."""

    def prepare(engine: LLMEngine) -> dict:
        processor = engine.processor
        if tools is None:
            token_ids = processor.apply_chat_template(conversation, add_generation_prompt, **template_kwargs)
            chat_params = params
        else:
            chats = prepare_tool_chats(
                processor, [conversation], [params], tools, tool_choice, parallel_tool_calls,
                add_generation_prompt, template_kwargs, raise_errors=True,
            )  # fmt: skip
            token_ids, chat_params, intake.tools = chats.token_ids[0], chats.params[0], chats.tool_sets[0]
        intake.params = chat_params
        return {
            "prompt": token_ids,
            "params": chat_params,
            "prompt_token_ids": token_ids,
            "priority": priority,
            "adapter": resolve_adapter_choice(engine, adapter),
        }

    # An error output of a conversation names no prompt text: its token ids are not known then.
    intake = Intake([], params, prepare)
    return intake


class PendingRequest(NamedTuple):
    """A request handed to the engine thread and not yet known to be queued: ``added`` resolves
    to its id once ``engine.add_request`` ran, or raises what it raised."""

    request_id: str
    sink: OutputSink
    added: asyncio.Future[str]
    intake: Intake
