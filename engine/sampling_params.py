"""SamplingParams: the per-request decoding options, validated at the SDK edge (Pydantic)."""

from __future__ import annotations

from typing import Any, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loomlm.grammar.specs import RESPONSE_FORMAT_CLASSES


class SamplingParams(BaseModel):
    """How to decode one prompt. Bad values raise a ``pydantic.ValidationError`` (a ``ValueError``)
    naming the field, before any work is scheduled.

    ``temperature=0`` is greedy decoding. ``top_k=0`` and ``top_p=1`` and ``min_p=0`` disable those
    filters. ``seed`` makes sampling reproducible whatever else is in the batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    n: int = Field(1, ge=1, le=128, description="Number of completions to return for the prompt.")
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**63)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    max_tokens: int = Field(256, ge=1, description="Most tokens to generate.")
    min_tokens: int = Field(0, ge=0, description="EOS and stop tokens are masked until this many.")
    stop: list[str] = Field(default_factory=list, description="Strings that end generation.")
    stop_token_ids: list[int] = Field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="Top-n logprobs per generated token.")
    skip_special_tokens: bool = True
    response_format: Any = Field(
        None,
        description=(
            "Structured output: a Pydantic model class (or any type a TypeAdapter accepts), a JSON Schema "
            "dict, JsonSchema(...), JsonObject() or 'json_object', Regex(...) or Choice([...])."
        ),
    )

    @field_validator("response_format")
    @classmethod
    def _known_response_format(cls, value: Any) -> Any:
        if value is None or isinstance(value, (*RESPONSE_FORMAT_CLASSES, dict, bool)):
            return value
        if isinstance(value, str) and value == "json_object":
            return value
        if isinstance(value, str):
            raise ValueError(
                f"response_format string {value!r} is not understood: pass Regex({value!r}) for a regex, "
                "'json_object' for any JSON, or a JSON Schema as a dict"
            )
        if isinstance(value, list | tuple | set):
            raise ValueError("response_format got a list; wrap the options as Choice([...])")
        if isinstance(value, type) or get_origin(value) is not None:
            return value  # a type: checked when its schema is derived at intake
        raise ValueError(f"response_format of type {type(value).__name__} is not supported")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must be non-empty")
        return value

    @field_validator("stop_token_ids")
    @classmethod
    def _token_ids_non_negative(cls, value: list[int]) -> list[int]:
        if any(t < 0 for t in value):
            raise ValueError("stop_token_ids must be non-negative token ids")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SamplingParams:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        return self
