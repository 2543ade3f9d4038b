"""Request bodies (Pydantic models, checked at the edge) of the OpenAI routes and the adapter routes.

Fields follow OpenAI's Chat Completions and Completions APIs, nulls allowed where clients send them.
Unknown fields are accepted and ignored, as OpenAI does, except those in ``UNSUPPORTED``: they ask
for something this server would otherwise silently not do, so they are refused (``convert``).
Extras, as vLLM names them: ``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens``,
``stop_token_ids``, ``ignore_eos``, ``include_stop_str_in_output``, ``skip_special_tokens``,
``chat_template_kwargs``, ``add_generation_prompt``, and the response formats ``regex``, ``choice``
and ``grammar`` beside ``text``, ``json_object`` and ``json_schema``. Sizes are bounded here;
the prompt's length in tokens is bounded by the engine (413)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 16  # completions per prompt
MAX_MESSAGES = 2048
MAX_PROMPTS = 64  # prompts in one /v1/completions request
MAX_TOOLS = 128
MAX_STOP = 16
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 1024  # options of a "choice" response format

# Fields that would otherwise be silently ignored although they ask for a behaviour: refused (400).
# Name -> what to use instead.
UNSUPPORTED = {
    "functions": "use tools",
    "function_call": "use tool_choice",
    "audio": "this server produces text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "guided_json": 'use response_format {"type": "json_schema", ...}',
    "guided_regex": 'use response_format {"type": "regex", "regex": ...}',
    "guided_choice": 'use response_format {"type": "choice", "choices": [...]}',
    "guided_grammar": 'use response_format {"type": "grammar", "grammar": ...}',
    "guided_decoding_backend": "the grammar backend is chosen when the server starts",
    "structured_outputs": "use response_format",
    "lora_request": "name the adapter in model",
}


class _Open(BaseModel):
    """Unknown fields are kept (``model_extra``) so that ``convert`` can refuse the unsupported ones."""

    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # A string, or content parts ({"type": "text", "text": ...}; other part types are refused).
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=256)


class JsonSchemaSpec(_Open):
    name: str | None = Field(None, max_length=256)
    description: str | None = None
    schema_: dict[str, Any] | bool = Field(alias="schema")
    # Absent: false, as in OpenAI (keywords that cannot be enforced are dropped from the grammar and
    # the output is validated after); true: exactly enforced, or 400.
    strict: bool | None = None


class ResponseFormat(_Open):
    """``text``, ``json_object``, ``json_schema`` (OpenAI); ``regex`` (``regex``: Rust regex syntax),
    ``choice`` (``choices``: exactly one of these strings), ``grammar`` (``grammar``: a Lark grammar,
    or GBNF with ``syntax: "gbnf"``) are loomlm's."""

    type: Literal["text", "json_object", "json_schema", "regex", "choice", "grammar"]
    json_schema: JsonSchemaSpec | None = None
    regex: str | None = Field(None, min_length=1)
    choices: list[str] | None = Field(None, min_length=1, max_length=MAX_CHOICES)
    grammar: str | None = Field(None, min_length=1)
    syntax: Literal["lark", "gbnf"] = "lark"


class StreamOptions(_Open):
    include_usage: bool | None = False


class SamplingRequest(_Open):
    """The fields both routes share."""

    model: str | None = Field(None, max_length=256)
    n: int | None = Field(None, ge=1, le=MAX_N)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None  # accepted, unused
    # extras (vLLM's names)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP)
    ignore_eos: bool | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = True
    modalities: list[str] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = True


class CompletionRequest(SamplingRequest):
    # One prompt (text or token ids) or a list of them.
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool | None = False
    best_of: int | None = None
    suffix: str | None = None


class LoadLoRAAdapterRequest(_Open):
    lora_name: str = Field(min_length=1, max_length=128)
    lora_path: str = Field(min_length=1, max_length=4096)


class UnloadLoRAAdapterRequest(_Open):
    lora_name: str = Field(min_length=1, max_length=128)
