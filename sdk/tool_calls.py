"""Function calling on top of ``LLM.chat``: the tools' prompt and grammar for each conversation,
tool calls parsed out of finished outputs, typed calls, the tool loop's messages, and streaming
deltas of calls.

Tools stay in the SDK layer: the engine only needs the call grammar (a ``StructuralTags`` response
format), and everything tool-specific (rendering tools into the prompt, role ``tool`` messages,
turning a finished text into ``tool_calls``) happens before a request is added and after its output
comes back. ``finish_tool_outputs`` fills ``CompletionOutput.tool_calls``: the calls in the text,
``.text`` the text outside them, and finish reason ``tool_calls`` when a normally finished
completion holds at least one call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.engine.sampling_params import SamplingParams
from loomlm.grammar.call_formats import HERMES, CallFormat
from loomlm.grammar.specs import OutputParseError
from loomlm.grammar.tool_format import no_tool_call_format, tool_call_format
from loomlm.grammar.tool_specs import (
    ToolDefinitionError,
    ToolSpec,
    parse_tool_calls,
    parse_tool_calls_until_cut,
    tool_specs_by_name,
)
from loomlm.prompts import as_params_list
from loomlm.tool_functions import Tool, as_tool
from loomlm.tool_prompts import native_call_format, tool_messages

Conversation = Sequence[dict[str, Any]]


class ToolCallError(ValueError):
    """The model made no usable call: ``output`` holds what it produced."""

    def __init__(self, message: str, output: RequestOutput | None = None) -> None:
        super().__init__(message)
        self.output = output


# -- tools and their format -------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolSet:
    """The tools of one request, the call grammar (or the no-call grammar) and the choice."""

    tools: tuple[Tool, ...]
    response_format: Any
    tool_choice: Any = "auto"
    call_format: CallFormat = HERMES

    @property
    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self.tools]

    def by_name(self) -> dict[str, Tool]:
        return {tool.spec.name: tool for tool in self.tools}


def tool_set(
    tools: Sequence[Any],
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    call_format: CallFormat = HERMES,
) -> ToolSet:
    """Functions, Pydantic models, OpenAI dicts and ToolSpecs, mixed, as one ToolSet, calls in
    ``call_format`` (the chat template's own, or the generic one).
    ToolDefinitionError on a bad tool, a duplicate name, a named choice not in the list or
    ``required`` with no tools."""
    if isinstance(tools, Mapping | str) or not isinstance(tools, Sequence):
        raise ToolDefinitionError(f"tools must be a list, got {type(tools).__name__}")
    resolved = tuple(as_tool(tool) for tool in tools)
    tool_specs_by_name([tool.spec for tool in resolved])  # duplicate names
    fmt = tool_call_format([t.spec for t in resolved], tool_choice, parallel_tool_calls, call_format)
    grammar = fmt if fmt is not None else no_tool_call_format(call_format)
    return ToolSet(resolved, grammar, tool_choice, call_format)


def per_conversation(value: Any, count: int, is_list: Callable[[Any], bool], what: str) -> list[Any]:
    """``value`` for every conversation, or one per conversation when ``is_list(value)``."""
    if not is_list(value):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"got {len(value)} {what} for {count} conversations; give one or one each")
    return list(value)


def is_tools_per_conversation(tools: Any) -> bool:
    """A list of tool lists (one per conversation): a single tool is never a list."""
    return isinstance(tools, list | tuple) and bool(tools) and all(isinstance(t, list | tuple) for t in tools)


def tool_params(params: SamplingParams, tools: ToolSet) -> SamplingParams:
    if params.response_format is not None:
        raise ValueError(
            "chat() got tools and a response_format: a tool call answer has its own grammar; "
            "drop response_format, or make the format a tool and use tool_choice to require it"
        )
    return params.model_copy(update={"response_format": tools.response_format})


@dataclass
class ToolChats:
    """Conversations prepared for a chat with tools: token ids, params and tools per conversation,
    and the message of each conversation whose tools are malformed (it runs no request)."""

    token_ids: list[list[int]]
    params: list[SamplingParams]
    tool_sets: list[ToolSet | None]
    errors: dict[int, str]


def prepare_tool_chats(
    processor: Any,
    conversations: list[Conversation],
    params_list: list[SamplingParams],
    tools: Any,
    tool_choice: Any,
    parallel_tool_calls: bool,
    add_generation_prompt: bool,
    template_kwargs: dict[str, Any],
    raise_errors: bool,
) -> ToolChats:
    """Tools and tool choice (one for all or one per conversation) resolved, rendered and
    constrained per conversation; a ToolDefinitionError fails its conversation alone (or raises,
    with ``raise_errors``)."""
    count = len(conversations)
    tools_list = per_conversation(tools, count, is_tools_per_conversation, "tool lists")
    choices = per_conversation(tool_choice, count, lambda c: isinstance(c, list | tuple), "tool choices")
    native_format = native_call_format(processor.tokenizer)
    call_format = native_format or HERMES
    chats = ToolChats([], [], [], {})
    shared: dict[tuple[int, str], ToolSet] = {}
    for i, (conversation, params) in enumerate(zip(conversations, params_list, strict=True)):
        try:
            key = (id(tools_list[i]), repr(choices[i]))
            if key not in shared:
                shared[key] = tool_set(tools_list[i], choices[i], parallel_tool_calls, call_format)
            tools_i = shared[key]
        except ToolDefinitionError as error:
            if raise_errors:
                raise
            chats.errors[i] = f"{type(error).__name__}: {error}"
            chats.token_ids.append([])
            chats.params.append(params)
            chats.tool_sets.append(None)
            continue
        messages, extra = tool_messages(conversation, tools_i, native_format is not None)
        chats.params.append(tool_params(params, tools_i))
        chats.token_ids.append(
            processor.apply_chat_template(messages, add_generation_prompt, **template_kwargs, **extra)
        )
        chats.tool_sets.append(tools_i)
    return chats


def chat_with_tools(
    llm: Any,
    conversations: list[Conversation],
    single: bool,
    sampling_params: Any,
    tools: Any,
    tool_choice: Any,
    parallel_tool_calls: bool,
    add_generation_prompt: bool,
    template_kwargs: dict[str, Any],
    use_tqdm: bool | None,
    adapters: Any,
) -> list[RequestOutput]:
    """``LLM.chat`` with tools: prepare each conversation, run the batch, parse the calls."""
    params = as_params_list(sampling_params, len(conversations))
    chats = prepare_tool_chats(
        llm.engine.processor, conversations, params, tools, tool_choice, parallel_tool_calls,
        add_generation_prompt, template_kwargs, raise_errors=single,
    )  # fmt: skip
    outputs = llm._run(chats.token_ids, chats.token_ids, chats.params, None, use_tqdm, adapters, chats.errors)
    return [finish_tool_outputs(out, t) for out, t in zip(outputs, chats.tool_sets, strict=True)]


# -- the prompt -------------------------------------------------------------------------------------
def finish_tool_outputs(output: RequestOutput, tools: ToolSet | None) -> RequestOutput:
    """Fill ``tool_calls`` of each finished completion (in place; returns ``output``)."""
    if tools is None or output.error is not None:
        return output
    for completion in output.outputs:
        apply_tool_calls(completion, tools.specs, tools.call_format)
    return output


def apply_tool_calls(
    completion: CompletionOutput, specs: Sequence[ToolSpec], call_format: CallFormat = HERMES
) -> None:
    """Parse a finished completion's calls: ``tool_calls`` the calls, ``text`` the text outside them,
    finish reason ``tool_calls`` when it stopped normally with at least one call. Cut by
    ``max_tokens`` (finish reason ``length``), the complete calls before the cut are kept and
    ``parse_error`` says a call was cut. A text that does not parse keeps its text, has no calls
    and says why in ``parse_error``."""
    if not completion.finished or completion.finish_reason in ("error", "abort"):
        return
    cut = False
    try:
        if not specs:
            content, calls = completion.text, []
        elif completion.finish_reason == "length":
            content, calls, cut = parse_tool_calls_until_cut(completion.text, specs, call_format)
        else:
            content, calls = parse_tool_calls(completion.text, specs, call_format)
    except OutputParseError as error:
        completion.tool_calls = []
        completion.parse_error = completion.parse_error or str(error)
        return
    completion.tool_calls = calls
    if cut:
        completion.parse_error = completion.parse_error or (
            "max_tokens cut the output inside a tool call; the complete calls before it are in tool_calls"
        )
    if calls:
        completion.text = content
        if completion.finish_reason == "stop":
            completion.finish_reason = "tool_calls"


# -- typed calls and the tool loop -------------------------------------------------------------------
