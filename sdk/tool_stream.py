"""Streaming deltas of tool calls in the OpenAI chunk shape, from the text deltas of one completion:
content outside calls, then per call its index, id and name once and argument fragments."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from loomlm.grammar.call_formats import HERMES, CallFormat
from loomlm.grammar.tool_specs import ToolCall, new_tool_call_id

_HEADER = r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"%s"\s*:\s*(?=\{)'


class ToolCallStreamer:
    """Fed the text deltas of one completion, yields OpenAI chunk-shaped deltas: ``{"content": s}``
    outside calls; per call once ``{"tool_calls": [{"index", "id", "type": "function", "function":
    {"name", "arguments": ""}}]}`` and then ``{"tool_calls": [{"index", "function": {"arguments":
    fragment}}]}``, calls in the format ``fmt``. Text that may still become a call's trigger is held
    back until it cannot; ``finish()`` releases it. ``tool_calls`` lists the finished calls (with
    the streamed ids)."""

    def __init__(self, fmt: CallFormat = HERMES) -> None:
        self._fmt = fmt
        self._header_pattern = re.compile(_HEADER % re.escape(fmt.arguments_key))
        close = r"\s*" + re.escape(fmt.close_marker) if fmt.close_marker else ""
        self._trailer_pattern = re.compile(r"\s*\}" + close)
        self._buffer = ""
        self._state = "text"  # text | header | arguments | trailer
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._calls: list[list[Any]] = []  # [id, name, arguments text, finished]

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(i, name, json.loads(args)) for i, name, args, done in self._calls if done]

    def feed(self, delta: str) -> Iterator[dict]:
        self._buffer += delta
        while True:
            step = getattr(self, f"_{self._state}")()
            if step is None:
                return
            if step:
                yield step

    def finish(self) -> Iterator[dict]:
        """The held-back text, once the completion has ended."""
        if self._state == "text" and self._buffer:
            yield {"content": self._buffer}
        self._buffer = ""

    def _text(self) -> dict | None:
        start = self._buffer.find(self._fmt.trigger)
        if start != -1:
            content, self._buffer = self._buffer[:start], self._buffer[start + len(self._fmt.open_marker) :]
            self._state = "header"
            return {"content": content} if content else {}
        keep = _held_back(self._buffer, self._fmt.trigger)
        content, self._buffer = (
            self._buffer[: len(self._buffer) - keep],
            self._buffer[len(self._buffer) - keep :],
        )
        return {"content": content} if content else None

    def _header(self) -> dict | None:
        match = self._header_pattern.match(self._buffer)
        if match is None:
            return None
        name = json.loads(match[1])
        self._buffer = self._buffer[match.end() :]
        self._calls.append([new_tool_call_id(), name, "", False])
        self._state, self._depth, self._in_string, self._escaped = "arguments", 0, False, False
        function = {"name": name, "arguments": ""}
        index = len(self._calls) - 1
        return {
            "tool_calls": [
                {"index": index, "id": self._calls[-1][0], "type": "function", "function": function}
            ]
        }

    def _arguments(self) -> dict | None:
        end = None
        for position, char in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = position + 1
                    break
        if not self._buffer:
            return None
        cut = len(self._buffer) if end is None else end
        fragment, self._buffer = self._buffer[:cut], self._buffer[cut:]
        self._calls[-1][2] += fragment
        if end is not None:
            self._state = "trailer"
        index = len(self._calls) - 1
        return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}

    def _trailer(self) -> dict | None:
        match = self._trailer_pattern.match(self._buffer)
        if match is None:
            return None
        self._buffer = self._buffer[match.end() :]
        self._calls[-1][3] = True
        self._state = "text"
        return {}


def _held_back(text: str, trigger: str) -> int:
    """Length of the longest end of ``text`` that begins ``trigger`` (could still become it)."""
    for size in range(min(len(text), len(trigger) - 1), 0, -1):
        if trigger.startswith(text[-size:]):
            return size
    return 0
