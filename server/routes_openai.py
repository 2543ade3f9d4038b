"""``POST /v1/chat/completions`` and ``POST /v1/completions``.

A request is checked (``convert``), queued on the engine replica the router picks (its errors
become statuses: 400, 404, 413, 429, 503), then answered whole or streamed. A stream's headers go
out with its first output, so a request that fails before its first token (a grammar that does not
compile) still gets a 4xx status rather than an error event. A client that disconnects, streaming
or not, has its request aborted: the non-streaming routes race the result against the connection
(``until_disconnected``), the streams are closed by their response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from loomlm.adapters.errors import AdapterError
from loomlm.async_outputs import ChatStreamChunk, StreamOutput
from loomlm.engine.outputs import RequestOutput
from loomlm.server.convert import chat_inputs, completion_inputs
from loomlm.server.errors import APIError, ClientDisconnected, api_error, model_not_found
from loomlm.server.protocol import ChatCompletionRequest, CompletionRequest
from loomlm.server.responses import (
    ResponseContext,
    chat_response,
    completion_response,
    new_id,
    output_error,
)
from loomlm.server.routed_stream import RoutedStream
from loomlm.server.state import ServerState
from loomlm.server.streaming import SSEResponse, chat_events, completion_events

T = TypeVar("T")
router = APIRouter()


def server_state(request: Request) -> ServerState:
    return request.app.state.loomlm


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = server_state(request)
    replicas = state.serving_replicas()
    adapter = await state.resolve_model(body.model)
    inputs = chat_inputs(body, state.limits)
    ctx = _context("chatcmpl", body, state, (body.top_logprobs or 0) if body.logprobs else None)
    submitted = replicas.submit_chat(
        inputs.messages, inputs.params, request_id=ctx.id, adapter=adapter, **inputs.options
    )
    stream = await _queued(submitted, state, adapter)
    try:
        if body.stream:
            first = await until_disconnected(request, anext(stream))
            _raise_if_failed([first])
            return SSEResponse(chat_events(ctx, first, stream))
        final = await until_disconnected(request, _last(stream))
    except BaseException:
        stream.cancel()  # whatever went wrong (the client left, this task was cancelled), stop it
        raise
    _raise_if_failed([final])
    return JSONResponse(chat_response(ctx, final.output))


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    state = server_state(request)
    replicas = state.serving_replicas()
    adapter = await state.resolve_model(body.model)
    prompts, params = completion_inputs(body, state.limits)
    ctx = _context("cmpl", body, state, body.logprobs)
    streams: list[RoutedStream[StreamOutput]] = []
    try:
        for i, prompt in enumerate(prompts):
            request_id = ctx.id if len(prompts) == 1 else f"{ctx.id}-{i}"
            streams.append(
                await _queued(
                    replicas.submit(prompt, params, request_id=request_id, adapter=adapter), state, adapter
                )
            )
        if body.stream:
            firsts = await until_disconnected(request, asyncio.gather(*(anext(s) for s in streams)))
            _raise_if_failed(firsts)
            return SSEResponse(completion_events(ctx, firsts, streams, params.n))
        outputs = await until_disconnected(request, asyncio.gather(*(s.result() for s in streams)))
    except BaseException:
        for stream in streams:  # one failed, or the client left: none of them may run on
            stream.cancel()
        raise
    _raise_if_failed(outputs)
    return JSONResponse(completion_response(ctx, outputs, params.n))


def _context(prefix: str, body: Any, state: ServerState, top_logprobs: int | None) -> ResponseContext:
    options = body.stream_options
    include_usage = bool(body.stream and options is not None and options.include_usage)
    return ResponseContext(new_id(prefix), body.model or state.base_name, top_logprobs, include_usage)


async def _queued(submitted: Awaitable[T], state: ServerState, adapter: str | None) -> T:
    """The request's stream once queued; what queueing raised as its HTTP error. An adapter that
    was unloaded between the name check and the queueing is a 404 like any unknown model."""
    try:
        return await submitted
    except APIError:
        raise
    except AdapterError as error:
        if adapter is not None:
            await state.refresh_adapters()
            if adapter not in state.adapters:
                raise model_not_found(adapter) from None
        raise api_error(error) from None
    except Exception as error:
        raise api_error(error) from None


async def _last(stream: RoutedStream[ChatStreamChunk]) -> ChatStreamChunk:
    """The finished chunk (tracked through the stream: with tools it holds the parsed calls)."""
    last = None
    async with stream:
        async for chunk in stream:
            last = chunk
    if last is None:
        raise RuntimeError(f"request {stream.request_id} ended without an output")
    return last


def _raise_if_failed(items: Sequence[ChatStreamChunk | StreamOutput | RequestOutput]) -> None:
    for item in items:
        output = item if isinstance(item, RequestOutput) else item.output
        if output.finished and (error := output_error(output)) is not None:
            raise error


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, unless the client disconnects first: then ``work`` is cancelled (which
    aborts its request) and ClientDisconnected raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise ClientDisconnected()


async def _disconnected(request: Request) -> None:
    # The body is read already: the server's receive() now returns only when the client is gone.
    while (await request.receive())["type"] != "http.disconnect":
        pass
