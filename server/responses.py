"""Response bodies in OpenAI's shapes, built from engine outputs: chat completions and their stream
chunks, text completions and theirs, logprobs in each API's format, usage; and ``output_error``,
which says whether a finished output is a failure the client must see as one."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loomlm.engine.outputs import CompletionOutput, Logprob, RequestOutput
from loomlm.server.errors import SERVER_ERROR, APIError, bad_request, unavailable

# JSON has no -inf; a token the grammar forbade reports this (vLLM's convention).
_MIN_LOGPROB = -9999.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass(slots=True)
class ResponseContext:
    """What every body and chunk of one response repeats; ``top_logprobs`` None: not asked."""

    id: str
    model: str
    top_logprobs: int | None = None
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, obj: str, choices: list[dict], usage: dict | None = None) -> dict[str, Any]:
        body = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage  # null on every chunk but the last (OpenAI's stream_options)
        return body


def usage(outputs: Sequence[RequestOutput]) -> dict[str, int]:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def output_error(output: RequestOutput) -> APIError | None:
    """The error a finished output stands for: failed before its first token (a grammar that does
    not compile, a request the KV cache cannot hold): 400; failed later: 500; aborted (the server
    is shutting down): 503. None for a normal finish."""
    if output.error is not None:
        if not any(c.token_ids for c in output.outputs):
            return bad_request(output.error, code="request_failed")
        return APIError(
            500, f"Generation failed: {output.error}", type=SERVER_ERROR, code="generation_failed"
        )
    if any(c.finish_reason == "abort" for c in output.outputs):
        return unavailable("The request was aborted: the server is shutting down.", code="request_aborted")
    return None


# -- chat --------------------------------------------------------------------------------------------
def chat_response(ctx: ResponseContext, output: RequestOutput) -> dict[str, Any]:
    choices = [chat_choice(ctx, completion) for completion in output.outputs]
    return {
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": choices,
        "usage": usage([output]),
    }


def chat_choice(ctx: ResponseContext, completion: CompletionOutput) -> dict[str, Any]:
    calls = completion.tool_calls or []
    # OpenAI: content is null when the answer is tool calls alone.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not calls else None,
    }
    if calls:
        message["tool_calls"] = [call.to_openai() for call in calls]
    choice: dict[str, Any] = {
        "index": completion.index,
        "message": message,
        "logprobs": None,
        "finish_reason": completion.finish_reason,
    }
    if ctx.top_logprobs is not None:
        choice["logprobs"] = chat_logprobs(completion.token_ids, completion.logprobs or [], ctx.top_logprobs)
    if completion.stop_reason is not None:
        choice["stop_reason"] = completion.stop_reason  # vLLM's extra: the stop string or id that hit
    return choice


def chat_logprobs(token_ids: Sequence[int], steps: Sequence[dict[int, Logprob]], top: int) -> dict[str, Any]:
    content = []
    for token_id, step in zip(token_ids, steps, strict=False):
        chosen = step.get(token_id)
        if chosen is None:
            continue
        entry = _chat_token(chosen)
        entry["top_logprobs"] = [_chat_token(lp) for lp in _top(step, top)]
        content.append(entry)
    return {"content": content, "refusal": None}


def _chat_token(lp: Logprob) -> dict[str, Any]:
    text = lp.decoded_token or ""
    return {"token": text, "logprob": _finite(lp.logprob), "bytes": list(text.encode("utf-8"))}


# -- completions ---------------------------------------------------------------------------------------
def completion_response(ctx: ResponseContext, outputs: Sequence[RequestOutput], n: int) -> dict[str, Any]:
    choices = []
    for prompt_index, output in enumerate(outputs):
        for completion in output.outputs:
            choice = {
                "index": prompt_index * n + completion.index,
                "text": completion.text,
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
            if ctx.top_logprobs is not None:
                choice["logprobs"], _ = completion_logprobs(
                    completion.token_ids, completion.logprobs or [], ctx.top_logprobs, 0
                )
            if completion.stop_reason is not None:
                choice["stop_reason"] = completion.stop_reason
            choices.append(choice)
    return {
        "id": ctx.id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": choices,
        "usage": usage(outputs),
    }


def completion_logprobs(
    token_ids: Sequence[int], steps: Sequence[dict[int, Logprob]], top: int, offset: int
) -> tuple[dict[str, Any], int]:
    """The legacy logprobs object, and the text offset after its tokens (a stream continues it)."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for token_id, step in zip(token_ids, steps, strict=False):
        chosen = step.get(token_id)
        if chosen is None:
            continue
        text = chosen.decoded_token or ""
        tokens.append(text)
        token_logprobs.append(_finite(chosen.logprob))
        tops.append({lp.decoded_token or "": _finite(lp.logprob) for lp in _top(step, top)})
        offsets.append(offset)
        offset += len(text)
    body = {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}
    return body, offset


def _top(step: dict[int, Logprob], top: int) -> list[Logprob]:
    """The ``top`` best of one step (the sampled token's entry is among them only if it ranks)."""
    return sorted((lp for lp in step.values() if lp.rank <= top), key=lambda lp: lp.rank)[:top]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else _MIN_LOGPROB
