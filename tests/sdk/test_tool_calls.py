"""Function calling through ``LLM.chat(tools=...)`` and ``call``/``call_batch``.

The grammar's promises are checked at temperature 1 over many seeds on a tiny "bigram" model: the
SmolLM2 tokenizer, layers that add nothing to the residual stream, so the next-token logits depend
on the current token alone. Its weights make ``<`` -> ``tool`` -> ``_`` -> ``call`` -> ``>`` likely and
``<`` now and then, so calls actually happen (a random model never writes ``<tool_call>``); everything
after the trigger is the grammar's doing. Plus: malformed tools fail their conversation alone, and
the real SmolLM2 picks the right tool and arguments (slow)."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from pydantic import Field
from tool_support import NAMES, QUESTION, TOOLS, Unit, get_weather, search

from loomlm import LLM, SamplingParams, ToolCallError, ToolDefinitionError
from loomlm.engine.outputs import CompletionOutput
from loomlm.grammar.tool_specs import CALL_START
from loomlm.tool_functions import FunctionTool, as_tool
from loomlm.tool_runs import TypedCall

SEEDS = range(12)


@pytest.fixture(scope="module")
def llm(bigram_dir):
    return LLM(str(bigram_dir), max_model_len=1024, block_size=8, max_num_seqs=16)


def seeded(max_tokens: int = 64) -> list[SamplingParams]:
    return [SamplingParams(temperature=1.0, seed=seed, max_tokens=max_tokens) for seed in SEEDS]


def check_calls(completion: CompletionOutput, allowed: set[str]) -> None:
    """Every call names an allowed tool and its arguments build the tool's typed value."""
    by_name = {tool.spec.name: tool for tool in map(as_tool, TOOLS)}
    assert completion.tool_calls is not None
    if completion.finish_reason == "tool_calls":
        assert completion.tool_calls, "finish reason tool_calls with no call"
    for call in completion.tool_calls:
        assert call.name in allowed
        built = by_name[call.name].build(call)
        if isinstance(by_name[call.name], FunctionTool):
            assert isinstance(built, by_name[call.name].arguments_model)
        assert CALL_START not in completion.text.replace(json.dumps(call.arguments), "")


CHOICES = {
    "required": ("required", NAMES),
    "named": ({"type": "function", "function": {"name": "search"}}, {"search"}),
}


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("choice", ["required", "named"])
def test_required_and_named_choices_call_given_tools_with_valid_arguments(llm, choice, parallel):
    tool_choice, allowed = CHOICES[choice]
    outputs = llm.chat(
        [QUESTION] * len(SEEDS), seeded(), tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=parallel
    )
    called = 0
    for output in outputs:
        completion = output.outputs[0]
        assert output.error is None
        assert completion.finish_reason in ("tool_calls", "length")  # never a text answer
        check_calls(completion, allowed)
        if completion.finish_reason == "tool_calls":
            called += 1
        if not parallel:
            assert len(completion.tool_calls) <= 1
    assert called >= len(SEEDS) // 4, "too few calls to mean anything"


def test_auto_gives_valid_calls_or_text(llm):
    outputs = llm.chat([QUESTION] * len(SEEDS), seeded(), tools=TOOLS)
    reasons = [output.outputs[0].finish_reason for output in outputs]
    for output in outputs:
        check_calls(output.outputs[0], NAMES)
    assert "tool_calls" in reasons and "stop" in reasons
    for output in outputs:
        completion = output.outputs[0]
        if completion.finish_reason == "stop":
            assert completion.tool_calls == [] and CALL_START not in completion.text


def test_none_never_calls(llm):
    outputs = llm.chat([QUESTION] * len(SEEDS), seeded(), tools=TOOLS, tool_choice="none")
    for output in outputs:
        completion = output.outputs[0]
        assert completion.tool_calls == [] and completion.finish_reason in ("stop", "length")
        assert CALL_START not in completion.text


def test_call_returns_typed_calls_that_run(llm):
    params = SamplingParams(temperature=1.0, seed=0, max_tokens=96)
    calls = llm.call([get_weather, search], QUESTION, sampling_params=params)
    assert calls
    for call in calls:
        assert isinstance(call, TypedCall) and call.name in {"get_weather", "search"}
        assert call.function in (get_weather, search)
        assert isinstance(call.arguments, call.tool.arguments_model)
        assert isinstance(call.invoke(), str if call.name == "get_weather" else list)


def test_call_batch_can_return_failures_in_place(llm):
    params = SamplingParams(temperature=1.0, seed=0, max_tokens=3)
    results = llm.call_batch(
        [get_weather], ["Weather in Paris?"] * 2, sampling_params=params, return_exceptions=True
    )
    assert all(
        isinstance(r, ToolCallError) and r.output.outputs[0].finish_reason == "length" for r in results
    )
    with pytest.raises(ToolCallError, match="no tool call"):
        llm.call_batch([get_weather], ["Weather in Paris?"], sampling_params=params)


def test_call_raises_without_a_call(llm):
    with pytest.raises(ToolCallError, match="no tool call"):
        llm.call([get_weather], "Weather in Paris?", sampling_params=SamplingParams(max_tokens=2, seed=0))


def test_malformed_tools_fail_their_conversation_alone(llm):
    bad_schema = {
        "type": "function",
        "function": {"name": "bad", "parameters": {"type": "object", "properties": 5}},
    }
    tools = [[get_weather, get_weather], [bad_schema], [get_weather], [], [get_weather]]
    choices = ["auto", "auto", {"type": "function", "function": {"name": "nope"}}, "required", "auto"]
    params = SamplingParams(temperature=1.0, seed=0, max_tokens=8)
    outputs = llm.chat([QUESTION] * 5, params, tools=tools, tool_choice=choices)
    errors = [output.error for output in outputs]
    assert "two tools are named 'get_weather'" in errors[0]
    assert "invalid parameters schema" in errors[1]
    assert "not among the tools" in errors[2]
    assert "'required' needs at least one tool" in errors[3]
    assert all(output.outputs[0].finish_reason == "error" for output in outputs[:4])
    assert errors[4] is None and outputs[4].outputs[0].finish_reason in ("stop", "length", "tool_calls")


def test_malformed_tools_raise_for_one_conversation(llm):
    with pytest.raises(ToolDefinitionError, match="not among the tools"):
        llm.chat(QUESTION, tools=[get_weather], tool_choice={"type": "function", "function": {"name": "x"}})
    with pytest.raises(ToolDefinitionError, match="cannot make a tool"):
        llm.chat(QUESTION, tools=[42])


def test_tools_and_a_response_format_together_are_refused(llm):
    with pytest.raises(ValueError, match="tools and a response_format"):
        llm.chat(QUESTION, SamplingParams(response_format={"type": "object"}), tools=[get_weather])


# -- the real SmolLM2 -------------------------------------------------------------------------------
class WebSearch:
    """The example's search function (its query must not be empty), named ``search``."""

    @staticmethod
    def search(query: Annotated[str, Field(min_length=1)], max_results: int = 3) -> list[str]:
        """Search the web and return the titles of the top results.

        Args:
            query: What to search for.
            max_results: How many results to return.
        """
        return [query] * max_results


@pytest.mark.slow
def test_smollm2_calls_weather_and_search_with_the_right_arguments(smollm2_dir):
    llm = LLM(str(smollm2_dir), max_num_seqs=4)
    greedy = SamplingParams(temperature=0, max_tokens=160)
    tools = [get_weather, WebSearch.search]
    # One request at a time: the 135M model's choices are close calls, and a batch of another size
    # rounds the float32 sums differently.
    one = {"sampling_params": greedy, "parallel_tool_calls": False}
    weather = llm.call(tools, "What is the weather in London in celsius?", **one)
    found = llm.call(tools, "Search the web for the best pizza recipes.", **one)
    assert [(c.name, c.arguments.city, c.arguments.unit, c.arguments.days) for c in weather] == [
        ("get_weather", "London", Unit.CELSIUS, None)
    ]
    assert [c.name for c in found] == ["search"] and "pizza" in found[0].arguments.query.lower()
    assert found[0].invoke() == [found[0].arguments.query] * found[0].arguments.max_results


@pytest.mark.slow
@pytest.mark.xfail(
    reason="SmolLM2-135M greedy picks unit 'celsius' even when asked for fahrenheit (the grammar "
    "allows both; the model's choice); a larger model, or tool_choice with a narrower enum, gets it",
    strict=False,
)
def test_smollm2_picks_the_non_default_enum_value_when_asked(smollm2_dir):
    llm = LLM(str(smollm2_dir), max_num_seqs=4)
    (call,) = llm.call(
        [get_weather],
        "What is the weather in Paris in fahrenheit?",
        sampling_params=SamplingParams(temperature=0, max_tokens=160),
    )
    assert (call.arguments.city, call.arguments.unit) == ("Paris", Unit.FAHRENHEIT)
