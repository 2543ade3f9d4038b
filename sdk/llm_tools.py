"""The typed function-calling methods of ``LLM`` (``call``, ``call_batch``, ``run_tools``), kept
apart so that llm.py stays the offline API's core; they build on ``LLM.chat`` with ``tools``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loomlm import tool_runs
from loomlm.engine.sampling_params import SamplingParams
from loomlm.prompts import Conversation


class ToolCallsAPI:
    """Mixed into ``LLM``; every method goes through ``self.chat``."""

    def call(
        self,
        functions: Sequence[Any],
        prompt: str | Conversation,
        *,
        tool_choice: Any = "required",
        parallel_tool_calls: bool = True,
        sampling_params: SamplingParams | None = None,
    ) -> list[tool_runs.TypedCall]:
        """The model's calls of ``functions`` (tools as in chat) for a prompt or conversation, each
        a TypedCall with validated arguments and ``.invoke()``; ToolCallError if it made none."""
        return self.call_batch(
            functions, [prompt], tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls, sampling_params=sampling_params,
        )[0]  # fmt: skip

    def call_batch(
        self,
        functions: Sequence[Any],
        prompts: Sequence[str | Conversation],
        *,
        tool_choice: Any = "required",
        parallel_tool_calls: bool = True,
        sampling_params: SamplingParams | None = None,
        return_exceptions: bool = False,
    ) -> list[list[tool_runs.TypedCall]]:
        """``call`` for many prompts in one batch (greedy, 512 tokens by default). With
        ``return_exceptions=True`` a failed item is its ToolCallError instead of raising."""
        return tool_runs.call_batch(
            self, functions, prompts, tool_choice, parallel_tool_calls, sampling_params, return_exceptions
        )

    def run_tools(
        self,
        functions: Sequence[Any],
        messages: str | Conversation,
        *,
        max_rounds: int = 4,
        sampling_params: SamplingParams | None = None,
        tool_choice: Any = "auto",
        parallel_tool_calls: bool = True,
    ) -> tool_runs.ToolRunResult:
        """Chat, run the functions the model calls, give it their results (role ``tool``; an
        exception becomes ``error: ...``) and repeat until it answers in text, at most
        ``max_rounds`` model turns (then ``finished`` is False)."""
        params = tool_runs.call_params(sampling_params)
        return tool_runs.tool_loop(
            self, functions, messages, max_rounds, params, tool_choice, parallel_tool_calls
        )
