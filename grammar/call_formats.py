"""Tool-call formats: how a model writes one call in its answer, as data. The call grammar
(``tool_format``), the parser (``tool_specs.parse_tool_calls``), the streamer and the prompt all
read the same ``CallFormat``, so a format is declared once.

- ``HERMES`` (Hermes 2 Pro, Qwen2.5, and loomlm's generic format for templates without tools)::

      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Paris"}}
      </tool_call>

- ``LLAMA3_JSON`` (Llama 3.1 / 3.2 JSON tool calling): the bare object, arguments under
  ``"parameters"``: ``{"name": "get_weather", "parameters": {"city": "Paris"}}``.

``detect_call_format`` tells them apart from a chat template's rendering of an assistant turn
that holds a probe call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROBE_NAME = "loomlm_probe_tool"
PROBE_ARGUMENTS = {"loomlm_probe_argument": 7}


@dataclass(frozen=True, slots=True)
class CallFormat:
    """One call is ``open`` + ``{"name": NAME, "<arguments_key>": {...}}`` + ``close``; in free
    text, ``trigger`` (``open`` without its whitespace, or the object's first characters when
    there is no ``open``) starts a call and nothing else may contain it."""

    name: str
    open: str
    close: str
    arguments_key: str

    @property
    def trigger(self) -> str:
        return self.open.strip() or '{"name":'

    @property
    def open_marker(self) -> str:
        """What the parser skips before the JSON object (whitespace around it is free)."""
        return self.open.strip()

    @property
    def close_marker(self) -> str:
        return self.close.strip()

    def begin(self, tool_name: str) -> str:
        """The text of a call up to its arguments object, trigger included."""
        return f'{self.open}{{"name": {json.dumps(tool_name)}, "{self.arguments_key}": '

    def end(self) -> str:
        """The text of a call after its arguments object."""
        return "}" + self.close

    def render(self, tool_name: str, arguments: Any) -> str:
        """One finished call, as the model writes it (for calls in a conversation's history)."""
        return self.begin(tool_name) + json.dumps(arguments, ensure_ascii=False) + self.end()


HERMES = CallFormat("hermes", "<tool_call>\n", "\n</tool_call>", "arguments")
LLAMA3_JSON = CallFormat("llama3_json", "", "", "parameters")
CALL_FORMATS = {fmt.name: fmt for fmt in (HERMES, LLAMA3_JSON)}


def probe_messages() -> list[dict]:
    """A conversation whose last assistant turn holds one call of a probe tool."""
    call = {
        "id": "call_probe",
        "type": "function",
        "function": {"name": PROBE_NAME, "arguments": PROBE_ARGUMENTS},
    }
    return [
        {"role": "user", "content": "probe"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_probe", "name": PROBE_NAME, "content": "probe result"},
    ]


def detect_call_format(rendered: str) -> CallFormat | None:
    """The format a chat template writes the probe call in (``rendered``: the template applied to
    ``probe_messages()``), or None when it is neither known format."""
    arguments = json.dumps(PROBE_ARGUMENTS)
    for fmt in (HERMES, LLAMA3_JSON):
        key = f'"{fmt.arguments_key}"'
        marker_ok = not fmt.open_marker or fmt.open_marker in rendered
        if marker_ok and PROBE_NAME in rendered and key in rendered and arguments in rendered:
            return fmt
    return None
