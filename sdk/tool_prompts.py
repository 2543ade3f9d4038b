"""Tools in the prompt: whether a chat template renders ``tools`` itself and in which call format
(``native_call_format``), and conversations with tool calls and ``role: "tool"`` results
rewritten for templates that do not (the generic Hermes-style format in the system prompt)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loomlm.grammar.call_formats import HERMES, CallFormat, detect_call_format, probe_messages
from loomlm.grammar.tool_format import tools_system_prompt
from loomlm.grammar.tool_specs import ToolCall, ToolSpec

if TYPE_CHECKING:
    from loomlm.tool_calls import ToolSet

Conversation = Sequence[dict[str, Any]]
_PROBE = [{"role": "user", "content": "probe"}]
_PROBE_TOOL = ToolSpec("probe_tool", "probe", {"type": "object", "properties": {}}).to_openai()


@functools.lru_cache(maxsize=16)
def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders a ``tools`` argument (a probe rendered with and without;
    memoized per tokenizer)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or "tools" not in template:
        return False
    try:
        plain = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
        probed = tokenizer.apply_chat_template(
            _PROBE, tools=[_PROBE_TOOL], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # a template that fails on tools does not support them
        return False
    return plain != probed


@functools.lru_cache(maxsize=16)
def native_call_format(tokenizer: Any) -> CallFormat | None:
    """The call format of a chat template that renders ``tools`` (it writes a probe call in it),
    or None: tools then go in the generic system prompt and calls in the generic format."""
    if not template_renders_tools(tokenizer):
        return None
    try:
        rendered = tokenizer.apply_chat_template(probe_messages(), tokenize=False)
    except Exception:  # a template that cannot render a call in history has no format we can use
        return None
    return detect_call_format(rendered)


def tool_messages(messages: Conversation, tools: ToolSet, native: bool) -> tuple[list[dict], dict]:
    """The conversation and extra chat-template arguments for a request with tools. Native
    templates get ``tools=[...]`` and the messages with dict arguments; others get the tools in the
    system message, calls in the ``<tool_call>`` format and results as ``<tool_response>`` blocks."""
    messages = normalize_messages(messages, native)
    if not tools.tools:
        return messages, {}
    if native:
        return messages, {"tools": [spec.to_openai() for spec in tools.specs]}
    prompt = tools_system_prompt(tools.specs)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{prompt}".lstrip()
        return [first, *messages[1:]], {}
    return [{"role": "system", "content": prompt}, *messages], {}


def normalize_messages(messages: Conversation, native: bool) -> list[dict]:
    """Messages with assistant ``tool_calls`` and role ``tool`` results in a form the template can
    render. Native: arguments as dicts (ToolCall objects accepted). Otherwise Hermes style: calls as
    ``<tool_call>`` blocks in the assistant text, consecutive results as one user message of
    ``<tool_response>`` blocks."""
    out: list[dict] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ValueError(f"a message must be a dict, got {type(message).__name__}")
        role, calls = message.get("role"), message.get("tool_calls")
        if role == "assistant" and calls:
            calls = [_call_dict(call) for call in calls]
            if native:
                out.append({**message, "content": message.get("content") or "", "tool_calls": calls})
            else:
                blocks = [
                    HERMES.render(call["function"]["name"], call["function"]["arguments"]) for call in calls
                ]
                text = "\n".join([message["content"], *blocks] if message.get("content") else blocks)
                out.append({"role": "assistant", "content": text})
        elif role == "tool" and not native:
            block = f"<tool_response>\n{content_text(message.get('content'))}\n</tool_response>"
            previous = out[-1] if out else None
            if previous is not None and previous.get("_tool_responses"):
                previous["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_responses": True})
        else:
            out.append(dict(message))
    for message in out:
        message.pop("_tool_responses", None)
    return out


def _call_dict(call: Any) -> dict:
    """An OpenAI ``tool_calls`` entry (or a ToolCall) with its arguments as a dict."""
    if isinstance(call, ToolCall):
        call = call.to_openai()
    function = dict(call.get("function") or {})
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"tool call {function.get('name')!r}: arguments are not JSON") from None
    return {"id": call.get("id"), "type": "function", "function": {**function, "arguments": arguments}}


def content_text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)


# -- outputs ----------------------------------------------------------------------------------------
