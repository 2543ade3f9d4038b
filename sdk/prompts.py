"""What the SDK accepts as prompts and sampling parameters, normalised to one per prompt, and the
output a prompt gets when it cannot run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.engine.sampling_params import SamplingParams

PromptInput = str | Sequence[int]
Conversation = Sequence[dict[str, Any]]


def as_prompt_list(prompts: PromptInput | Sequence[PromptInput]) -> list[PromptInput]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(p, int) for p in prompts):
        return [prompts]  # one prompt given as token ids
    return prompts


def as_params_list(
    params: SamplingParams | Sequence[SamplingParams] | None, num_prompts: int
) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * num_prompts
    if isinstance(params, SamplingParams):
        return [params] * num_prompts
    params = list(params)
    if len(params) != num_prompts:
        raise ValueError(f"got {len(params)} SamplingParams for {num_prompts} prompts; give one or one each")
    for p in params:
        if not isinstance(p, SamplingParams):
            raise TypeError(f"expected SamplingParams, got {type(p).__name__}")
    return params


def error_output(request_id: str, prompt: PromptInput, params: SamplingParams, error: str) -> RequestOutput:
    return RequestOutput(
        request_id=request_id,
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_token_ids=[] if isinstance(prompt, str) else list(prompt),
        outputs=[
            CompletionOutput(index=i, text="", token_ids=[], finish_reason="error") for i in range(params.n)
        ],
        finished=True,
        error=error,
    )
