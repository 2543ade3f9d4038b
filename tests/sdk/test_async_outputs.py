"""The stream trackers of AsyncLLM on hand-built engine snapshots: text held back while it may
still become a stop string, finish reasons once per completion, and chat chunks with tool-call
deltas whose final output carries the parsed calls under the streamed ids."""

from __future__ import annotations

import json

from loomlm import SamplingParams
from loomlm.async_outputs import ChatDeltaTracker, DeltaTracker
from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.tool_calls import tool_set

CALL = '<tool_call>\n{"name": "pick", "arguments": {"color": "red", "shade": {"dark": true}}}\n</tool_call>'
SCRIPT = "Sure. " + CALL


def pick(color: str, shade: dict) -> str:
    """Pick a color."""
    return color


def snapshot(texts: list[str], reasons: list[str | None]) -> RequestOutput:
    """What the engine hands over after a step: whole texts so far, one per completion."""
    completions = [
        CompletionOutput(index=i, text=text, token_ids=list(range(len(text))), finish_reason=reason)
        for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
    ]
    return RequestOutput("r", None, [1], completions, finished=all(r is not None for r in reasons))


def test_a_tail_that_may_become_a_stop_string_is_held_back():
    tracker = DeltaTracker(SamplingParams(stop=["END"]))
    steps = [(["abc E"], [None]), (["abc EN"], [None]), (["abc "], ["stop"])]  # the engine cut "END"
    deltas = [tracker.update(snapshot(*step)).deltas[0] for step in steps]
    assert [d.text for d in deltas] == ["abc ", "", ""]
    assert [d.finish_reason for d in deltas] == [None, None, "stop"]
    assert [len(d.token_ids) for d in deltas] == [5, 1, 0]


def test_each_completion_reports_its_finish_reason_once():
    tracker = DeltaTracker(SamplingParams(n=2))
    steps = [
        (["a", "x"], [None, None]),
        (["ab", "xy"], ["length", None]),
        (["ab", "xyz"], ["length", "stop"]),
    ]
    items = [tracker.update(snapshot(*step)) for step in steps]
    assert ["".join(item.text_delta(i) for item in items) for i in (0, 1)] == ["ab", "xyz"]
    assert [[d.finish_reason for d in item.deltas] for item in items] == [
        [None, None],
        ["length", None],
        [None, "stop"],
    ]


def test_chat_chunks_stream_content_then_the_call_and_finish_with_tool_calls():
    tools = tool_set([pick], "auto")
    for cuts in ([len(SCRIPT)], list(range(1, len(SCRIPT) + 1)), [3, 8, 20, 40, 70, len(SCRIPT)]):
        tracker = ChatDeltaTracker(SamplingParams(), tools)
        reasons = [None] * (len(cuts) - 1) + ["stop"]
        chunks = [tracker.update(snapshot([SCRIPT[:cut]], [r])) for cut, r in zip(cuts, reasons, strict=True)]
        choices = [chunk.choices[0] for chunk in chunks]
        assert "".join(c.content for c in choices) == "Sure. "
        calls = [call for c in choices for call in c.tool_calls]
        assert calls[0]["function"] == {"name": "pick", "arguments": ""} and calls[0]["index"] == 0
        arguments = "".join(call["function"]["arguments"] for call in calls)
        assert json.loads(arguments) == {"color": "red", "shade": {"dark": True}}
        assert [c.finish_reason for c in choices] == [None] * (len(cuts) - 1) + ["tool_calls"]
        [parsed] = chunks[-1].output.outputs[0].tool_calls
        assert parsed.id == calls[0]["id"] and parsed.arguments["color"] == "red"
        assert chunks[-1].output.outputs[0].finish_reason == "tool_calls"


def test_a_completion_that_called_early_keeps_its_calls_in_the_final_output():
    tracker = ChatDeltaTracker(SamplingParams(n=2), tool_set([pick], "auto"))
    first = tracker.update(snapshot([SCRIPT, "pl"], ["stop", None]))
    last = tracker.update(snapshot([SCRIPT, "plain"], ["stop", "length"]))
    assert [c.finish_reason for c in first.choices] == ["tool_calls", None]
    assert [c.finish_reason for c in last.choices] == [None, "length"]
    assert last.output.outputs[0].finish_reason == "tool_calls" and last.output.outputs[0].text == "Sure."
    assert last.output.outputs[0].tool_calls[0].id == first.choices[0].tool_calls[0]["id"]
    assert last.choices[1].content == "ain" and last.output.outputs[1].tool_calls == []
