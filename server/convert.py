"""Request bodies -> what AsyncLLM takes: SamplingParams (with the response format), chat messages,
tools and template options, completion prompts. Everything a client can get wrong is found here and
raised as a 400 (or 413 for a prompt that cannot fit) naming the parameter; what needs the model
(the tokenizer, the grammar, the chat template) is checked when AsyncLLM queues the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.specs import Choice, Grammar, JsonObject, JsonSchema, Regex
from loomlm.server.errors import APIError, bad_request, validation_error
from loomlm.server.protocol import (
    MAX_STOP_CHARS,
    UNSUPPORTED,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ResponseFormat,
    SamplingRequest,
)

MAX_SEQUENCES = 128  # prompts x n in one request
# chat_template_kwargs may not override what the server passes itself (or swap the template).
_RESERVED_TEMPLATE_KWARGS = {
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors",
    "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Limits:
    """The model's bounds: ``max_model_len`` tokens; a prompt of more than ``max_prompt_chars``
    characters cannot fit it whatever the tokenizer does (refused before tokenizing it)."""

    max_model_len: int
    max_prompt_chars: int


@dataclass(slots=True)
class ChatInputs:
    messages: list[dict[str, Any]]
    params: SamplingParams
    options: dict[str, Any]  # submit_chat's keyword arguments (tools, template options)


def chat_inputs(body: ChatCompletionRequest, limits: Limits) -> ChatInputs:
    _refuse_unsupported(body)
    if body.modalities not in (None, ["text"]):
        raise bad_request("this server produces text only: modalities must be ['text']", "modalities")
    top = body.top_logprobs
    if not body.logprobs and top:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    params = sampling_params(body, limits, max_tokens, (top or 0) if body.logprobs else None)
    messages = [_message(m, i) for i, m in enumerate(body.messages)]
    chars = sum(len(m.get("content") or "") for m in messages)
    _check_prompt_chars(chars, limits, "messages")
    options: dict[str, Any] = {"add_generation_prompt": body.add_generation_prompt is not False}
    if body.chat_template_kwargs:
        reserved = sorted(set(body.chat_template_kwargs) & _RESERVED_TEMPLATE_KWARGS)
        if reserved:
            raise bad_request(f"chat_template_kwargs may not set {reserved}", "chat_template_kwargs")
        options["chat_template_kwargs"] = dict(body.chat_template_kwargs)
    if body.tools:
        if params.response_format is not None:
            raise bad_request(
                "tools and a response_format cannot be combined: a tool-call answer has its own grammar; "
                "make the format a tool and name it in tool_choice",
                "response_format",
            )
        options["tools"] = [_non_strict_by_default(tool) for tool in body.tools]
        options["tool_choice"] = body.tool_choice if body.tool_choice is not None else "auto"
        options["parallel_tool_calls"] = body.parallel_tool_calls is not False
    elif body.tool_choice not in (None, "none", "auto"):
        raise bad_request("tool_choice needs tools", "tool_choice")
    return ChatInputs(messages, params, options)


def completion_inputs(
    body: CompletionRequest, limits: Limits
) -> tuple[list[str | list[int]], SamplingParams]:
    _refuse_unsupported(body)
    if body.echo:
        raise bad_request("echo is not supported", "echo")
    if body.suffix:
        raise bad_request("suffix is not supported", "suffix")
    if body.best_of is not None and body.best_of != (body.n or 1):
        raise bad_request("best_of is not supported: use n", "best_of")
    prompt = body.prompt
    single = isinstance(prompt, str) or (bool(prompt) and isinstance(prompt[0], int))
    prompts = [prompt] if single else list(prompt)
    if not prompts:
        raise bad_request("the prompt is empty", "prompt")
    if len(prompts) * (body.n or 1) > MAX_SEQUENCES:
        raise bad_request(f"prompts x n must be at most {MAX_SEQUENCES}", "prompt")
    for item in prompts:
        if isinstance(item, str):
            _check_prompt_chars(len(item), limits, "prompt")
        elif len(item) >= limits.max_model_len:
            _too_long(f"a prompt has {len(item)} tokens", limits, "prompt")
    params = sampling_params(body, limits, body.max_tokens, body.logprobs)
    return prompts, params


def sampling_params(
    body: SamplingRequest, limits: Limits, max_tokens: int | None, logprobs: int | None
) -> SamplingParams:
    if body.logit_bias:
        raise bad_request("logit_bias is not supported", "logit_bias")
    if max_tokens is not None and max_tokens > limits.max_model_len:
        raise bad_request(
            f"max_tokens is {max_tokens} but the model's context is {limits.max_model_len} tokens",
            "max_tokens",
        )
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise bad_request(f"a stop string is longer than {MAX_STOP_CHARS} characters", "stop")
    given = {
        "n": body.n,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repetition_penalty": body.repetition_penalty,
        "min_tokens": body.min_tokens,
        "stop_token_ids": body.stop_token_ids,
        "ignore_eos": body.ignore_eos,
        "include_stop_str_in_output": body.include_stop_str_in_output,
        "skip_special_tokens": body.skip_special_tokens,
        "logprobs": logprobs,
    }
    values = {key: value for key, value in given.items() if value is not None}
    # OpenAI's default is "as many as fit": the engine stops at the end of the context.
    values["max_tokens"] = max_tokens if max_tokens is not None else limits.max_model_len
    values["stop"] = stops
    values["response_format"] = response_format(body.response_format)
    try:
        return SamplingParams(**values)
    except ValidationError as error:
        raise validation_error(error.errors(include_url=False)) from None


def response_format(fmt: ResponseFormat | None) -> Any:
    """A ``response_format`` as the SDK's format object (None: free text)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonObject()
    if fmt.type == "json_schema":
        spec = _required(fmt.json_schema, "json_schema")
        return JsonSchema(spec.schema_, strict=bool(spec.strict))
    if fmt.type == "regex":
        return Regex(_required(fmt.regex, "regex"))
    if fmt.type == "choice":
        return Choice(_required(fmt.choices, "choices"))
    return Grammar(_required(fmt.grammar, "grammar"), syntax=fmt.syntax)


def _required(value: Any, field: str) -> Any:
    if value is None:
        raise bad_request(f"this response_format type needs {field!r}", f"response_format.{field}")
    return value


def _refuse_unsupported(body: SamplingRequest) -> None:
    for name, value in (body.model_extra or {}).items():
        if name in UNSUPPORTED and value not in (None, False, [], {}, ""):
            raise bad_request(f"{name} is not supported: {UNSUPPORTED[name]}", name)


def _message(message: ChatMessage, index: int) -> dict[str, Any]:
    """An OpenAI message as the chat template takes it: content parts joined into one text,
    ``developer`` as ``system``; unknown fields dropped."""
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role}
    out["content"] = _content_text(message.content, index)
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _content_text(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") not in ("text", "input_text") or not isinstance(part.get("text"), str):
            raise bad_request(
                f"messages[{index}].content: only text parts are supported, got {part.get('type')!r}",
                f"messages.{index}.content",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _non_strict_by_default(tool: dict[str, Any]) -> dict[str, Any]:
    """OpenAI reads an absent ``strict`` as false; loomlm's ToolSpec as true. The server speaks
    OpenAI: absent means best effort (unenforceable keywords dropped, arguments validated after)."""
    function = tool.get("function")
    if isinstance(function, dict) and function.get("strict") is None:
        return {**tool, "function": {**function, "strict": False}}
    return tool


def _check_prompt_chars(chars: int, limits: Limits, param: str) -> None:
    if chars > limits.max_prompt_chars:
        _too_long(f"the prompt has {chars} characters", limits, param)


def _too_long(what: str, limits: Limits, param: str) -> None:
    raise APIError(
        413,
        f"{what}, more than the model's context of {limits.max_model_len} tokens can hold; shorten it",
        param=param,
        code="prompt_too_long",
    )
