"""Typed calls and the tool loop: ``TypedCall`` (validated arguments, ``invoke``), running calls into
``role: "tool"`` messages, ``LLM.run_tools``' loop and ``LLM.call_batch``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.specs import OutputParseError
from loomlm.grammar.tool_specs import (
    ToolCall,
)
from loomlm.tool_calls import ToolCallError, ToolSet, tool_set
from loomlm.tool_functions import FunctionTool, Tool
from loomlm.tool_prompts import content_text

Conversation = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class TypedCall:
    """A call the model made: the ``tool``, its validated ``arguments`` (the function's arguments
    model, the Pydantic model itself, or a dict for a schema-only tool) and the raw ``call``."""

    tool: Tool
    arguments: Any
    call: ToolCall

    @property
    def name(self) -> str:
        return self.call.name

    @property
    def function(self) -> Callable[..., Any] | None:
        return self.tool.function if isinstance(self.tool, FunctionTool) else None

    def invoke(self) -> Any:
        """Run the function with the typed arguments (TypeError for a model or schema-only tool)."""
        if not isinstance(self.tool, FunctionTool):
            raise TypeError(f"tool {self.name!r} is not a function; its arguments are in .arguments")
        return self.tool.function(
            **{name: getattr(self.arguments, name) for name in type(self.arguments).model_fields}
        )


def typed_calls(output: RequestOutput, tools: ToolSet) -> list[TypedCall]:
    """The typed calls of a finished output, or ToolCallError saying why there are none."""
    if output.error is not None:
        raise ToolCallError(f"the tool call failed: {output.error}", output)
    completion = output.outputs[0]
    if completion.parse_error is not None or not completion.tool_calls:
        reason = completion.parse_error or "the model answered without calling a tool"
        raise ToolCallError(f"no tool call ({completion.finish_reason}): {reason}", output)
    by_name = tools.by_name()
    try:
        return [TypedCall(by_name[c.name], by_name[c.name].build(c), c) for c in completion.tool_calls]
    except OutputParseError as error:
        raise ToolCallError(f"a tool call does not validate: {error}", output) from None


def as_conversation(source: str | Conversation) -> list[dict]:
    if isinstance(source, str):
        if not source.strip():
            raise ValueError("got an empty prompt")
        return [{"role": "user", "content": source}]
    return list(source)


def call_params(params: SamplingParams | None) -> SamplingParams:
    """Greedy and 512 tokens by default; one completion."""
    if params is None:
        return SamplingParams(temperature=0.0, max_tokens=512)
    if params.n != 1:
        raise ValueError("call() and run_tools() take one completion; use SamplingParams(n=1)")
    return params


@dataclass
class ToolRunResult:
    """The end of ``run_tools``: the whole conversation, whether the model answered in text
    (``finished``; False when ``max_rounds`` rounds all called tools or the answer was cut), the
    number of model rounds and the last output."""

    messages: list[dict]
    finished: bool
    rounds: int
    output: RequestOutput | None = None
    reason: str = ""
    answer: str | None = None


def assistant_message(completion: CompletionOutput) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": completion.text or None}
    if completion.tool_calls:
        message["tool_calls"] = [call.to_openai() for call in completion.tool_calls]
    return message


def run_calls(calls: Sequence[ToolCall], tools: ToolSet) -> list[dict]:
    """Invoke each call; each result (or ``error: ...``) as a role ``tool`` message."""
    by_name = tools.by_name()
    results = []
    for call in calls:
        tool = by_name.get(call.name)
        try:
            if not isinstance(tool, FunctionTool):
                raise TypeError(f"tool {call.name!r} is not a function and cannot be run")
            content = content_text(tool.invoke(call))
        except Exception as error:  # a tool's failure goes back to the model, not up the stack
            content = f"error: {type(error).__name__}: {error}"
        results.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
    return results


# -- streaming --------------------------------------------------------------------------------------


def tool_loop(
    llm: Any,
    functions: Sequence[Any],
    messages: str | Conversation,
    max_rounds: int,
    params: SamplingParams,
    tool_choice: Any,
    parallel_tool_calls: bool,
) -> ToolRunResult:
    """``LLM.run_tools``: model turn, run its calls, append results; until a text answer or
    ``max_rounds`` model turns. Never loops past ``max_rounds``."""
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    tools = tool_set(functions, tool_choice, parallel_tool_calls)
    conversation = as_conversation(messages)
    output = None
    for round_number in range(1, max_rounds + 1):
        output = llm.chat(
            conversation,
            params,
            tools=tools.tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )[0]
        if output.error is not None:
            return ToolRunResult(conversation, False, round_number, output, f"error: {output.error}")
        completion = output.outputs[0]
        conversation.append(assistant_message(completion))
        if not completion.tool_calls:
            if completion.finish_reason != "stop":
                reason = (
                    completion.parse_error
                    or f"the answer ended with finish reason {completion.finish_reason!r}"
                )
                return ToolRunResult(conversation, False, round_number, output, reason)
            return ToolRunResult(conversation, True, round_number, output, "answered", completion.text)
        conversation.extend(run_calls(completion.tool_calls, tools))
    reason = f"max_rounds={max_rounds} reached: the model was still calling tools"
    return ToolRunResult(conversation, False, max_rounds, output, reason)


def call_batch(
    llm: Any,
    functions: Sequence[Any],
    prompts: Sequence[str | Conversation],
    tool_choice: Any,
    parallel_tool_calls: bool,
    params: SamplingParams | None,
    return_exceptions: bool,
) -> list[Any]:
    """``LLM.call_batch``: typed calls per prompt, or its ToolCallError."""
    tools = tool_set(functions, tool_choice, parallel_tool_calls)
    conversations = [as_conversation(prompt) for prompt in prompts]
    outputs = llm.chat(
        conversations,
        call_params(params),
        tools=tools.tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
    )
    results: list[Any] = []
    for output in outputs:
        try:
            results.append(typed_calls(output, tools))
        except ToolCallError as error:
            if not return_exceptions:
                raise
            results.append(error)
    return results
