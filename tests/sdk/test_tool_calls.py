"""Function calling through ``LLM.chat(tools=...)``, ``call``/``call_batch`` and ``run_tools``.

The grammar's promises are checked at temperature 1 over many seeds on a tiny "bigram" model: the
SmolLM2 tokenizer, layers that add nothing to the residual stream, so the next-token logits depend
on the current token alone. Its weights make ``<`` -> ``tool`` -> ``_`` -> ``call`` -> ``>`` likely and
``<`` now and then, so calls actually happen (a random model never writes ``<tool_call>``); everything
after the trigger is the grammar's doing. Plus: malformed tools fail their conversation alone, the
prompt for templates with and without tool support, tool messages, the tool loop (scripted) and
``ToolCallStreamer`` on a scripted text split at every boundary."""

from __future__ import annotations

import copy
import enum
import json
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from loomlm import LLM, SamplingParams, ToolCallError, ToolCallStreamer, ToolDefinitionError
from loomlm.engine.outputs import CompletionOutput, RequestOutput
from loomlm.grammar.tool_specs import CALL_START, parse_tool_calls
from loomlm.tool_calls import finish_tool_outputs, tool_set
from loomlm.tool_functions import FunctionTool, as_tool
from loomlm.tool_prompts import normalize_messages, template_renders_tools, tool_messages
from loomlm.tool_runs import TypedCall, tool_loop

SEEDS = range(12)
QUESTION = [{"role": "user", "content": "What is the weather in Paris? Also search for pizza."}]


class Unit(str, enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: int | None = None) -> str:
    """Get the weather for a city.

    Args:
        city: The city.
        unit: Temperature unit.
        days: Forecast days.
    """
    return f"{city}: 20 {unit.value}"


def search(query: str, max_results: Literal[1, 2, 3] = 3) -> list[str]:
    """Search the web."""
    return [query] * max_results


class Lookup(BaseModel):
    """Look a word up in the dictionary."""

    word: str


SCHEMA_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [get_weather, search, Lookup, SCHEMA_TOOL]
NAMES = {"get_weather", "search", "lookup", "add"}


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


# -- the prompt ---------------------------------------------------------------------------------------
def test_smollm2_gets_the_tools_in_its_system_message(tokenizer):
    assert not template_renders_tools(tokenizer)
    tools = tool_set([get_weather])
    messages, extra = tool_messages(QUESTION, tools, native=False)
    assert (
        extra == {} and messages[0]["role"] == "system" and '"name": "get_weather"' in messages[0]["content"]
    )
    with_system = [{"role": "system", "content": "Be brief."}, *QUESTION]
    merged, _ = tool_messages(with_system, tools, native=False)
    assert (
        len(merged) == 2
        and merged[0]["content"].startswith("Be brief.\n\n")
        and "<tools>" in merged[0]["content"]
    )


def test_a_template_with_tool_support_gets_tools_and_the_messages_as_they_are(tokenizer):
    native = copy.copy(tokenizer)
    native.chat_template = (
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% for c in m.tool_calls or [] %}"
        "[{{ c.function.name }} {{ c.function.arguments | tojson }}]{% endfor %}{% endfor %}"
    )
    assert template_renders_tools(native)
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    messages, extra = tool_messages(history, tool_set([get_weather]), native=True)
    assert [t["function"]["name"] for t in extra["tools"]] == ["get_weather"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert messages[2]["role"] == "tool"
    text = native.apply_chat_template(messages, tools=extra["tools"], tokenize=False)
    assert text.startswith("TOOLS:get_weather") and '[get_weather {"city": "Paris"}]' in text


def test_tool_messages_are_rendered_hermes_style_without_tool_support(tokenizer):
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "search", "arguments": {"query": "pizza"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": ["p1", "p2"]},
    ]
    messages = normalize_messages(history, native=False)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "search", "arguments": {"query": "pizza"}}\n</tool_call>'
    )
    assert messages[2]["content"] == (
        '<tool_response>\nsunny\n</tool_response>\n<tool_response>\n["p1", "p2"]\n</tool_response>'
    )
    _, calls = parse_tool_calls(messages[1]["content"], tool_set([get_weather, search]).specs)
    assert [c.arguments for c in calls] == [{"city": "Paris"}, {"query": "pizza"}]
    tokenizer.apply_chat_template(messages, tokenize=False)  # SmolLM2's template renders it


# -- the tool loop (scripted model) -------------------------------------------------------------------
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


def call_text(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


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


# -- streaming --------------------------------------------------------------------------------------
SCRIPT = (
    "Let me look <b>that</b> up. <tool"
    + call_text("get_weather", city='Pa"ris }', unit="celsius")
    + "\nand < also\n"
    + call_text("search", query="<tool_call> {[x]}", max_results=2)
    + " done <"
)


def stream(pieces: list[str]) -> tuple[list[dict], ToolCallStreamer]:
    streamer = ToolCallStreamer()
    deltas = [d for piece in pieces for d in streamer.feed(piece)]
    return deltas + list(streamer.finish()), streamer


SCRIPT_SPECS = [as_tool(get_weather).spec, as_tool(search).spec]


def check_stream(deltas: list[dict], streamer: ToolCallStreamer) -> None:
    content, calls = parse_tool_calls(SCRIPT, SCRIPT_SPECS)
    text = "".join(d.get("content", "") for d in deltas)
    assert text.strip() == content and text.endswith(" done <")
    headers = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert [(h["index"], h["type"], h["function"]) for h in headers] == [
        (0, "function", {"name": "get_weather", "arguments": ""}),
        (1, "function", {"name": "search", "arguments": ""}),
    ]
    for index, call in enumerate(calls):
        fragments = [
            d["tool_calls"][0]["function"]["arguments"]
            for d in deltas
            if "tool_calls" in d and d["tool_calls"][0]["index"] == index and "id" not in d["tool_calls"][0]
        ]
        assert all(fragments) and json.loads("".join(fragments)) == call.arguments
    assert [(c.id, c.name, c.arguments) for c in streamer.tool_calls] == [
        (h["id"], c.name, c.arguments) for h, c in zip(headers, calls, strict=True)
    ]
    assert all(set(d) in ({"content"}, {"tool_calls"}) and d != {"content": ""} for d in deltas)


def test_streamer_whole_text_and_one_character_at_a_time():
    check_stream(*stream([SCRIPT]))
    check_stream(*stream(list(SCRIPT)))


def test_streamer_split_at_every_boundary():
    for i in range(len(SCRIPT) + 1):
        check_stream(*stream([SCRIPT[:i], SCRIPT[i:]]))
    for i in range(0, len(SCRIPT), 3):
        for j in range(i, len(SCRIPT), 7):
            check_stream(*stream([SCRIPT[:i], SCRIPT[i:j], SCRIPT[j:]]))


def test_streamer_holds_back_only_what_may_become_a_call():
    streamer = ToolCallStreamer()
    assert list(streamer.feed("hi <to")) == [{"content": "hi "}]
    assert list(streamer.feed("ad")) == [{"content": "<toad"}]
    assert list(streamer.feed("<")) == [] and list(streamer.finish()) == [{"content": "<"}]


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
