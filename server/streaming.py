"""Server-sent events: ``data: {json}\\n\\n`` chunks, then ``data: [DONE]``.

Each stream's generator holds its AsyncLLM request(s) in ``async with``: however the generator ends
(finished, client gone, server stopping) the requests are aborted unless already over, so a client
that disconnects frees its KV blocks at once. ``SSEResponse`` makes sure the generator is closed
(Starlette cancels the sending task on a disconnect but leaves the generator to the garbage
collector). A failure after the headers went out is sent as an ``{"error": ...}`` event, which the
official clients raise as an APIError."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from loomlm.async_outputs import ChatChoiceDelta, ChatStreamChunk, StreamOutput
from loomlm.async_requests import RequestStream
from loomlm.engine.outputs import RequestOutput
from loomlm.server.errors import api_error
from loomlm.server.responses import ResponseContext, chat_logprobs, completion_logprobs, output_error, usage

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class SSEResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str]) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


# -- chat --------------------------------------------------------------------------------------------
async def chat_events(
    ctx: ResponseContext, first: ChatStreamChunk, stream: RequestStream[ChatStreamChunk]
) -> AsyncIterator[str]:
    """One conversation's chunks: the assistant role per choice, then per step and choice the
    content and tool-call deltas in order (logprobs on the first delta after their tokens), the
    finish reason, and with ``include_usage`` a last chunk with no choices and the usage."""
    async with stream:
        try:
            for index in range(len(first.choices)):
                yield sse(
                    ctx.chunk(
                        "chat.completion.chunk", [_chat_choice(index, {"role": "assistant", "content": ""})]
                    )
                )
            pending: dict[int, list] = {}  # choice -> (token id, logprobs) not sent with a delta yet
            chunk = first
            while True:
                if chunk.finished and (error := output_error(chunk.output)) is not None:
                    yield sse(error.body())
                    break
                for choice in chunk.choices:
                    for event in _chat_choice_events(ctx, choice, pending):
                        yield sse(ctx.chunk("chat.completion.chunk", [event]))
                if chunk.finished:
                    if ctx.include_usage:
                        yield sse(ctx.chunk("chat.completion.chunk", [], usage([chunk.output])))
                    break
                chunk = await anext(stream)
        except Exception as error:  # the engine loop failed or stopped under the stream
            yield sse(api_error(error).body())
        yield DONE


def _chat_choice_events(
    ctx: ResponseContext, choice: ChatChoiceDelta, pending: dict[int, list]
) -> list[dict]:
    if ctx.top_logprobs is not None and choice.logprobs:
        pending.setdefault(choice.index, []).extend(zip(choice.token_ids, choice.logprobs, strict=False))
    events = [_chat_choice(choice.index, piece) for piece in choice.pieces]
    if choice.finish_reason is not None:
        events.append(_chat_choice(choice.index, {}, choice.finish_reason))
    if events and pending.get(choice.index):
        token_ids, steps = zip(*pending.pop(choice.index), strict=True)
        events[0]["logprobs"] = chat_logprobs(token_ids, steps, ctx.top_logprobs or 0)
    return events


def _chat_choice(index: int, delta: dict, finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


# -- completions ---------------------------------------------------------------------------------------
async def completion_events(
    ctx: ResponseContext,
    firsts: Sequence[StreamOutput],
    streams: Sequence[RequestStream[StreamOutput]],
    n: int,
) -> AsyncIterator[str]:
    """The chunks of one or more prompts, interleaved as they come: choice ``prompt * n + index``
    gets its text deltas (and logprobs) and its finish reason; with ``include_usage`` a last chunk
    with the usage of all."""
    async with contextlib.AsyncExitStack() as stack:
        for stream in streams:
            await stack.enter_async_context(stream)
        finals: dict[int, RequestOutput] = {}
        offsets: dict[int, int] = {}
        try:
            items = [(i, item) for i, item in enumerate(firsts)]
            live = {i: streams[i] for i, item in items if not item.finished}
            failed = False
            # aclosing: leaving the loop early closes the merge at once (its pumps cancelled).
            async with contextlib.aclosing(_with_rest(items, live)) as merged:
                async for prompt_index, item in merged:
                    if item.finished:
                        finals[prompt_index] = item.output
                        if (error := output_error(item.output)) is not None:
                            yield sse(error.body())
                            failed = True
                            break
                    for choice in _completion_choices(ctx, prompt_index, item, n, offsets):
                        yield sse(ctx.chunk("text_completion", [choice]))
            if not failed and ctx.include_usage:
                yield sse(ctx.chunk("text_completion", [], usage(list(finals.values()))))
        except Exception as error:
            yield sse(api_error(error).body())
        yield DONE


def _completion_choices(
    ctx: ResponseContext, prompt_index: int, item: StreamOutput, n: int, offsets: dict[int, int]
) -> list[dict]:
    choices = []
    for delta in item.deltas:
        if not delta.text and delta.finish_reason is None and not delta.token_ids:
            continue
        index = prompt_index * n + delta.index
        logprobs = None
        if ctx.top_logprobs is not None and delta.logprobs:
            logprobs, offsets[index] = completion_logprobs(
                delta.token_ids, delta.logprobs, ctx.top_logprobs, offsets.get(index, 0)
            )
        choices.append(
            {"index": index, "text": delta.text, "logprobs": logprobs, "finish_reason": delta.finish_reason}
        )
    return choices


async def _with_rest(
    items: list[tuple[int, StreamOutput]], live: dict[int, RequestStream[StreamOutput]]
) -> AsyncIterator[tuple[int, StreamOutput]]:
    """The first items, then the rest of every live stream as it comes (one stream: directly)."""
    for item in items:
        yield item
    if len(live) == 1:
        [(index, stream)] = live.items()
        async for item in stream:
            yield index, item
        return
    queue: asyncio.Queue[tuple[int, Any, BaseException | None]] = asyncio.Queue()
    end = object()

    async def pump(index: int, stream: RequestStream[StreamOutput]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((index, item, None))
            queue.put_nowait((index, end, None))
        except Exception as error:
            queue.put_nowait((index, None, error))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in live.items()]
    try:
        remaining = len(tasks)
        while remaining:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is end:
                remaining -= 1
                continue
            yield index, item
    finally:
        for task in tasks:  # a cancelled pump aborts its stream's request
            task.cancel()
