"""The offline ``LLM`` API as coroutines, mixed into ``AsyncLLM``: ``generate``, ``chat`` (tools
included) and ``extract``. Each batch is queued in one go, so its prompts share engine steps, and a
prompt that cannot run gets an error output as with ``LLM``; the helpers are ``LLM``'s own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from loomlm.async_requests import Intake, PendingRequest, RequestStream, chat_intake, prompt_intake
from loomlm.common.errors import RequestError
from loomlm.engine.outputs import RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.tool_specs import ToolDefinitionError
from loomlm.lora import per_prompt_adapters
from loomlm.prompts import Conversation, PromptInput, as_params_list, as_prompt_list, error_output
from loomlm.structured import ExtractionError, extraction_messages, extraction_params, extraction_result
from loomlm.tool_calls import finish_tool_outputs, is_tools_per_conversation, per_conversation

T = TypeVar("T")


class AsyncBatchAPI:
    """Mixed into ``AsyncLLM``, whose ``_enqueue``, ``_admit`` and ``_abandon`` queue the requests."""

    _enqueue: Callable[..., Any]
    _admit: Callable[..., Any]
    _abandon: Callable[..., None]

    async def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        priority: Sequence[int] | None = None,
        adapter: str | Sequence[str | None] | None = None,
        lora_request: Any = None,
    ) -> list[RequestOutput]:
        """``LLM.generate``: one finished output per prompt, in input order; a prompt that cannot
        run gets an output with ``error`` set (QueueFullError included), the others run."""
        prompt_list = as_prompt_list(prompts)
        params_list = as_params_list(sampling_params, len(prompt_list))
        if priority is not None and len(priority) != len(prompt_list):
            raise ValueError(f"got {len(priority)} priorities for {len(prompt_list)} prompts")
        if adapter is not None and lora_request is not None:
            raise ValueError("give adapter= or lora_request=, not both")
        adapters = per_prompt_adapters(adapter if adapter is not None else lora_request, len(prompt_list))
        intakes = [
            prompt_intake(
                p, params_list[i], priority[i] if priority else 0, adapters[i] if adapters else None
            )
            for i, p in enumerate(prompt_list)
        ]
        return await self._run_batch(intakes)

    async def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        add_generation_prompt: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
        adapter: str | Sequence[str | None] | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = "auto",
        parallel_tool_calls: bool = True,
    ) -> list[RequestOutput]:
        """``LLM.chat``: replies to one conversation or a list, with ``tools`` (one list for all or
        one per conversation) and ``tool_choice`` as there. For one conversation a malformed tool
        raises; in a list it fails its conversation alone."""
        single = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if single else list(messages)
        params_list = as_params_list(sampling_params, len(conversations))
        adapters = per_prompt_adapters(adapter, len(conversations))
        tools_list, choices = _per_conversation_tools(tools, tool_choice, len(conversations))
        intakes = []
        for i, conversation in enumerate(conversations):
            adapter_i = adapters[i] if adapters else None
            intake = chat_intake(
                conversation, params_list[i], 0, adapter_i, add_generation_prompt,
                chat_template_kwargs or {}, tools_list[i], choices[i], parallel_tool_calls,
            )  # fmt: skip
            intakes.append(intake)
        outputs = await self._run_batch(intakes, raise_errors=single)
        return [finish_tool_outputs(out, intake.tools) for out, intake in zip(outputs, intakes, strict=True)]

    async def extract(
        self,
        target: type[T] | Any,
        source: str | Conversation,
        *,
        instructions: str | None = None,
        sampling_params: SamplingParams | None = None,
        strict: bool = True,
        adapter: str | None = None,
    ) -> T:
        """``LLM.extract``: the validated value, or ExtractionError carrying the output."""
        [value] = await self.extract_batch(
            target, [source], instructions=instructions, sampling_params=sampling_params, strict=strict,
            adapter=adapter,
        )  # fmt: skip
        return value

    async def extract_batch(
        self,
        target: type[T] | Any,
        sources: Sequence[str | Conversation],
        *,
        instructions: str | None = None,
        sampling_params: SamplingParams | None = None,
        strict: bool = True,
        adapter: str | Sequence[str | None] | None = None,
        return_exceptions: bool = False,
    ) -> list[T | ExtractionError]:
        """``LLM.extract_batch``: with ``return_exceptions=True`` a failure is its ExtractionError."""
        params = extraction_params(target, sampling_params, strict)
        conversations = [extraction_messages(target, source, instructions) for source in sources]
        results: list[Any] = []
        for output in await self.chat(conversations, params, adapter=adapter):
            try:
                results.append(extraction_result(output))
            except ExtractionError as error:
                if not return_exceptions:
                    raise
                results.append(error)
        return results

    async def _run_batch(self, intakes: list[Intake], raise_errors: bool = False) -> list[RequestOutput]:
        """Queue every intake in one go (they join the same engine step), then await them all. A
        RequestError fails its own output (or raises, with ``raise_errors``); leaving early aborts all."""
        pending: list[PendingRequest] = []
        try:
            for intake in intakes:
                pending.append(self._enqueue(intake))
            results: list[RequestStream | RequestOutput] = []
            for i, item in enumerate(pending):
                try:
                    results.append(await self._admit(item, lambda: _unchanged))
                except RequestError as error:
                    if raise_errors:
                        raise
                    results.append(
                        error_output(f"failed-{i}", item.intake.prompt, item.intake.params, _why(error))
                    )
            return [r if isinstance(r, RequestOutput) else await r.result() for r in results]
        except BaseException:
            for item in pending:
                self._abandon(item)
            raise


def _per_conversation_tools(tools: Any, tool_choice: Any, count: int) -> tuple[list[Any], list[Any]]:
    """Tools and tool choice per conversation (one for all or one each), as ``LLM.chat`` takes them."""
    if tools is None:
        return [None] * count, [tool_choice] * count
    tools_list = per_conversation(tools, count, is_tools_per_conversation, "tool lists")
    choices = per_conversation(tool_choice, count, lambda c: isinstance(c, list | tuple), "tool choices")
    return tools_list, choices


def _unchanged(output: RequestOutput) -> RequestOutput:
    return output


def _why(error: RequestError) -> str:
    """An error output's message, as ``LLM`` words it (a malformed tool says so)."""
    return f"{type(error).__name__}: {error}" if isinstance(error, ToolDefinitionError) else str(error)
