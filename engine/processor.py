"""Processor: intake. Validates a prompt against the model and its params, tokenizes it (chat
template included), resolves its response format (grammar compiling starts here) and builds the
Request objects (``n`` of them for ``n`` completions)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jinja2

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.registry import AdapterRef, AdapterRegistry
from loomlm.common.errors import InvalidParamsError, InvalidPromptError, PromptTooLongError
from loomlm.engine.detokenizer import IncrementalDetokenizer
from loomlm.engine.request import Request
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.structured_output import StructuredOutputManager

__all__ = ["Processor", "PromptTooLongError"]


class Processor:
    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int,
        max_model_len: int,
        max_kv_tokens: int,
        structured_output: StructuredOutputManager | None = None,
        adapters: AdapterRegistry | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.adapters = adapters  # None: LoRA is not enabled
        self.structured_output = structured_output
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.max_kv_tokens = max_kv_tokens
        self.eos_token_id: int | None = tokenizer.eos_token_id

    def tokenize(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a text prompt, or the given ids checked: every prompt, however it arrives
        (text, token ids, a chat template), is checked the same way. InvalidPromptError if empty,
        not integers, or outside the vocabulary."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidPromptError("the prompt is empty")
            return self.check_token_ids(self.tokenizer(prompt).input_ids)
        return self.check_token_ids(prompt)

    def check_token_ids(self, prompt_token_ids: Sequence[int]) -> list[int]:
        if isinstance(prompt_token_ids, (str, bytes)) or not isinstance(prompt_token_ids, Sequence):
            raise InvalidPromptError(
                f"prompt token ids must be a list of integers, got {type(prompt_token_ids).__name__}"
            )
        try:
            token_ids = [operator.index(t) for t in prompt_token_ids]
        except TypeError:
            kinds = sorted({type(t).__name__ for t in prompt_token_ids})
            raise InvalidPromptError(f"prompt token ids must be integers, got {', '.join(kinds)}") from None
        if not token_ids:
            raise InvalidPromptError("the prompt has no tokens")
        bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidPromptError(f"prompt token ids out of range [0, {self.vocab_size}): {bad[:5]}")
        return token_ids

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> list[int]:
        if not messages:
            raise InvalidPromptError("the conversation has no messages")
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise InvalidPromptError(
                "this model's tokenizer has no chat template; use generate() with a prompt"
            )
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
        except jinja2.TemplateError as error:  # the template itself rejects the conversation
            raise InvalidPromptError(f"the chat template rejected the conversation: {error}") from error
        # The template already holds any BOS; encoding must not add another.
        return self.check_token_ids(self.tokenizer(text, add_special_tokens=False).input_ids)

    def resolve_adapter(self, adapter: str | AdapterRef | None) -> AdapterRef | None:
        """The loaded adapter a request names (None: the base model); AdapterError if unknown."""
        if adapter is None or isinstance(adapter, AdapterRef):
            return adapter
        if self.adapters is None:
            raise AdapterError(f"adapter {adapter!r} requested but LoRA is not enabled (enable_lora=True)")
        return self.adapters.get(adapter)

    def make_requests(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        priority: int = 0,
        arrival_index: int = 0,
        adapter: AdapterRef | None = None,
    ) -> list[Request]:
        num_prompt = len(prompt_token_ids)
        if num_prompt >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {num_prompt} tokens but the model's context (max_model_len) is "
                f"{self.max_model_len}, which must also hold at least one generated token; "
                "shorten the prompt or raise max_model_len"
            )
        if num_prompt + 1 > self.max_kv_tokens:
            raise PromptTooLongError(
                f"the prompt has {num_prompt} tokens but the KV cache holds {self.max_kv_tokens}; "
                "raise kv_cache_bytes / num_kv_blocks or shorten the prompt"
            )
        bad_stop_ids = [t for t in params.stop_token_ids if t >= self.vocab_size]
        if bad_stop_ids:
            raise InvalidParamsError(f"stop_token_ids out of range [0, {self.vocab_size}): {bad_stop_ids}")
        if params.response_format is not None:
            if self.structured_output is None:
                raise InvalidParamsError("this engine has no structured-output support configured")
            # Resolve (validate, translate) before anything is queued: a bad schema fails only this prompt.
            self.structured_output.resolve(params.response_format)
        requests = []
        for index in range(params.n):
            request = Request(
                request_id=request_id if params.n == 1 else f"{request_id}#{index}",
                prompt_token_ids=prompt_token_ids,
                sampling_params=params,
                eos_token_id=self.eos_token_id,
                priority=priority,
                arrival_index=arrival_index,
                seed_offset=index,
                adapter=adapter,
            )
            request.detokenizer = IncrementalDetokenizer(self.tokenizer, prompt_token_ids, params)
            requests.append(request)
        if params.response_format is not None:
            self.structured_output.attach(requests, params.response_format)
        return requests
