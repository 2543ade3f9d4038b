"""The tool loop (``LLM.run_tools``, ``loomlm.tool_runs``): calls run, their results (or errors) go back
as tool messages, the loop ends on a text answer or after ``max_rounds``; a scripted model, then the
tiny bigram model end to end."""

from __future__ import annotations

import copy

import pytest
from tool_support import QUESTION, call_text, get_weather, search

from loomlm import LLM, SamplingParams
from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.tool_calls import finish_tool_outputs, tool_set
from loomlm.tool_runs import tool_loop


@pytest.fixture(scope="module")
def llm(bigram_dir):
    return LLM(str(bigram_dir), max_model_len=1024, block_size=8, max_num_seqs=16)


def broken(city: str) -> str:
    """Always fails."""
    raise RuntimeError(f"no data for {city}")


class ScriptedLLM:
    """Answers ``chat`` with the next scripted text, parsed as the real chat would."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.seen = list(texts), []

    def chat(self, conversation, params, *, tools, tool_choice, parallel_tool_calls):
        self.seen.append(copy.deepcopy(conversation))
        text = self.texts.pop(0)
        output = RequestOutput("r", None, [1], [CompletionOutput(0, text, [1], "stop")], finished=True)
        return [finish_tool_outputs(output, tool_set(tools, tool_choice, parallel_tool_calls))]


def test_run_tools_runs_calls_and_returns_the_text_answer():
    model = ScriptedLLM([call_text("get_weather", city="Paris") + call_text("broken", city="Oslo"), "Sunny."])
    params = SamplingParams(temperature=0)
    result = tool_loop(model, [get_weather, broken], "Weather?", 4, params, "auto", True)
    assert result.finished and result.rounds == 2 and result.answer == "Sunny."
    roles = [m["role"] for m in result.messages]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    calls = result.messages[1]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "broken"]
    assert result.messages[2] == {
        "role": "tool",
        "tool_call_id": calls[0]["id"],
        "name": "get_weather",
        "content": "Paris: 20 celsius",
    }
    assert result.messages[3]["content"] == "error: RuntimeError: no data for Oslo"
    assert model.seen[1] == result.messages[:4]  # the second round saw the calls and results


def test_run_tools_stops_after_max_rounds():
    model = ScriptedLLM([call_text("get_weather", city="Paris")] * 5)
    result = tool_loop(model, [get_weather], "Weather?", 3, SamplingParams(), "auto", True)
    assert not result.finished and result.rounds == 3 and "max_rounds=3" in result.reason
    assert len(model.seen) == 3 and [m["role"] for m in result.messages].count("tool") == 3


def test_run_tools_end_to_end_on_the_tiny_model(llm):
    result = llm.run_tools(
        [get_weather, search],
        QUESTION,
        max_rounds=2,
        sampling_params=SamplingParams(temperature=1.0, seed=1, max_tokens=48),
    )
    assert result.rounds <= 2 and result.messages[0] == QUESTION[0]
    assert result.finished == (result.messages[-1]["role"] == "assistant" and result.reason == "answered")
