"""The tool-call part of the output contract: ``CompletionOutput.tool_calls`` and how a finished
completion's text becomes calls (``apply_tool_calls``): text outside the calls, finish reason
``tool_calls`` only for a normal stop with at least one call, never a call from a cut-off block."""

from __future__ import annotations

import pytest

from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.grammar.tool_specs import ToolSpec
from loomlm.tool_calls import apply_tool_calls, finish_tool_outputs, tool_set

SPEC = ToolSpec(
    "get_weather",
    "Weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def completion(text: str, finish_reason: str | None = "stop") -> CompletionOutput:
    return CompletionOutput(index=0, text=text, token_ids=[1, 2], finish_reason=finish_reason)


def test_tool_calls_is_none_unless_the_request_had_tools():
    assert completion("hi").tool_calls is None
    output = RequestOutput("r", None, [1], [completion("hi " + CALL)], finished=True)
    assert finish_tool_outputs(output, None).outputs[0].tool_calls is None


def test_a_stopped_completion_with_calls_has_them_and_the_text_outside():
    c = completion(f"Let me check.\n{CALL}\n{CALL}")
    apply_tool_calls(c, [SPEC])
    assert c.finish_reason == "tool_calls"
    assert [(call.name, call.arguments) for call in c.tool_calls] == [("get_weather", {"city": "Oslo"})] * 2
    assert c.tool_calls[0].id != c.tool_calls[1].id and c.tool_calls[0].id.startswith("call_")
    assert c.text == "Let me check."


def test_a_text_answer_has_an_empty_list_and_keeps_its_finish_reason():
    c = completion("It is sunny.")
    apply_tool_calls(c, [SPEC])
    assert (c.tool_calls, c.finish_reason, c.text, c.parse_error) == ([], "stop", "It is sunny.", None)


@pytest.mark.parametrize("cut", [len("x <tool_call>"), len(CALL) - 3, len(CALL) // 2])
def test_a_completion_cut_inside_a_call_has_no_call(cut):
    text = ("x " + CALL)[:cut]
    c = completion(text, "length")
    apply_tool_calls(c, [SPEC])
    assert c.tool_calls == [] and c.finish_reason == "length" and c.text == text
    assert c.parse_error


def test_a_completion_cut_after_a_whole_call_keeps_it_but_stays_length():
    c = completion(CALL + " and then some", "length")
    apply_tool_calls(c, [SPEC])
    assert c.finish_reason == "length" and [call.name for call in c.tool_calls] == ["get_weather"]
    assert c.text == "and then some"


@pytest.mark.parametrize("reason", [None, "error", "abort"])
def test_unfinished_failed_or_aborted_completions_are_left_alone(reason):
    c = completion(CALL, reason)
    apply_tool_calls(c, [SPEC])
    assert c.tool_calls is None and c.text == CALL and c.finish_reason == reason


def test_a_request_error_output_is_left_alone():
    output = RequestOutput("r", None, [], [completion("", "error")], finished=True, error="bad")
    assert finish_tool_outputs(output, tool_set([SPEC])).outputs[0].tool_calls is None
