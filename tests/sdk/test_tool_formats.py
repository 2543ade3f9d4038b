"""Chat templates that render tools get the model's own call format, found by rendering a probe
call: Hermes / Qwen2.5 blocks (``<tool_call>`` + ``"arguments"``) or Llama 3.1 JSON (a bare
``{"name": ..., "parameters": ...}``). The grammar, the parser and the streamer follow the format,
so calls in it validate, ``none`` bans its trigger, and deltas stream in OpenAI's shape."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from loomlm import LLM, SamplingParams, ToolCallStreamer
from loomlm.grammar.call_formats import HERMES, LLAMA3_JSON, detect_call_format, probe_messages
from loomlm.grammar.specs import OutputParseError
from loomlm.grammar.tool_specs import parse_tool_calls
from loomlm.tool_calls import tool_set
from loomlm.tool_prompts import native_call_format

# A template in the style of Llama 3.1's JSON tool calling (our own minimal one, SmolLM2's tokens).
LLAMA3_STYLE = (
    "{%- for m in messages %}"
    "{%- if loop.first and tools %}<|im_start|>system\nCall a function by answering with JSON "
    '{"name": function name, "parameters": arguments}. Functions:\n'
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    '{%- for c in m.tool_calls %}{"name": "{{ c.function.name }}", '
    '"parameters": {{ c.function.arguments | tojson }}}{% endfor %}<|im_end|>\n'
    "{%- elif m.role == 'tool' %}<|im_start|>ipython\n{{ m.content }}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# In the style of Qwen2.5 / Hermes 2 Pro.
QWEN_STYLE = (
    "{%- if tools %}<|im_start|>system\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "</tools><|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    '{%- for c in m.tool_calls %}<tool_call>\n{"name": "{{ c.function.name }}", '
    '"arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "days": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 999},
                "b": {"type": "integer", "minimum": 0, "maximum": 999},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def with_template(tokenizer, template: str):
    native = copy.copy(tokenizer)
    native.chat_template = template
    return native


def test_the_call_format_is_read_from_how_the_template_writes_a_call(tokenizer):
    assert native_call_format(with_template(tokenizer, LLAMA3_STYLE)) is LLAMA3_JSON
    assert native_call_format(with_template(tokenizer, QWEN_STYLE)) is HERMES
    assert native_call_format(tokenizer) is None  # SmolLM2's template has no tools: the generic format
    odd = "{% if tools %}T{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert native_call_format(with_template(tokenizer, odd)) is None  # renders tools, calls unknown
    assert detect_call_format("no call here") is None
    rendered = with_template(tokenizer, LLAMA3_STYLE).apply_chat_template(probe_messages(), tokenize=False)
    assert detect_call_format(rendered) is LLAMA3_JSON


def test_llama3_json_calls_parse_with_their_parameters_key():
    second = LLAMA3_JSON.render("add", {"a": 3, "b": 4})
    text = 'Sure. {"name": "add", "parameters": {"a": 1, "b": 2}} ' + second
    content, calls = parse_tool_calls(text, [ADD], LLAMA3_JSON)
    assert content == "Sure." and [(c.name, c.arguments) for c in calls] == [
        ("add", {"a": 1, "b": 2}),
        ("add", {"a": 3, "b": 4}),
    ]
    with pytest.raises(OutputParseError, match='"parameters"'):
        parse_tool_calls('{"name": "add", "arguments": {"a": 1, "b": 2}}', [ADD], LLAMA3_JSON)
    with pytest.raises(OutputParseError, match="violate its schema"):
        parse_tool_calls('{"name": "add", "parameters": {"a": 1}}', [ADD], LLAMA3_JSON)


@pytest.mark.parametrize("fmt", [HERMES, LLAMA3_JSON])
def test_the_streamer_follows_the_format_at_every_split(fmt):
    first, second = fmt.render("add", {"a": 1, "b": 22}), fmt.render("add", {"a": 3, "b": 4})
    script = f"Let me check. {first} {second}"
    for cut in range(len(script) + 1):
        streamer = ToolCallStreamer(fmt)
        deltas = [*streamer.feed(script[:cut]), *streamer.feed(script[cut:]), *streamer.finish()]
        content = "".join(d.get("content", "") for d in deltas)
        assert content.strip() == "Let me check."
        headers = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
        assert [h["function"]["name"] for h in headers] == ["add", "add"]
        arguments = ["", ""]
        for d in deltas:
            for call in d.get("tool_calls", []):
                arguments[call["index"]] += call["function"]["arguments"]
        assert [json.loads(a) for a in arguments] == [{"a": 1, "b": 22}, {"a": 3, "b": 4}]
        assert [c.arguments for c in streamer.tool_calls] == [{"a": 1, "b": 22}, {"a": 3, "b": 4}]


@pytest.fixture(scope="module")
def llama3_llm(tmp_path_factory, bigram_dir):
    model_dir = tmp_path_factory.mktemp("llama3_style")
    for path in bigram_dir.iterdir():
        shutil.copy(path, model_dir / path.name)
    (model_dir / "chat_template.jinja").write_text(LLAMA3_STYLE)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)  # the .jinja file is the template
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return LLM(str(model_dir), max_model_len=1024, block_size=8, max_num_seqs=16)


def seeded(count: int = 8) -> list[SamplingParams]:
    return [SamplingParams(temperature=1.0, seed=seed, max_tokens=64) for seed in range(count)]


@pytest.mark.parametrize(
    ("choice", "allowed"),
    [("required", {"get_weather", "add"}), ({"type": "function", "function": {"name": "add"}}, {"add"})],
)
def test_a_llama3_style_template_gets_tools_natively_and_calls_in_its_format(llama3_llm, choice, allowed):
    assert native_call_format(llama3_llm.tokenizer) is LLAMA3_JSON
    outputs = llama3_llm.chat([QUESTION] * 8, seeded(), tools=[WEATHER, ADD], tool_choice=choice)
    called = 0
    for output in outputs:
        completion = output.outputs[0]
        assert completion.finish_reason in ("tool_calls", "length")
        if completion.finish_reason == "tool_calls":
            called += 1
            assert completion.tool_calls and all(c.name in allowed for c in completion.tool_calls)
            assert '"parameters"' not in completion.text  # the calls were taken out of the text
    assert called >= 4
    prompt = llama3_llm.tokenizer.decode(outputs[0].prompt_token_ids)
    assert "Functions:" in prompt and '"name": "get_weather"' in prompt and "<tools>" not in prompt


def test_none_bans_the_llama3_trigger(llama3_llm):
    tools = tool_set([WEATHER], "none", call_format=LLAMA3_JSON)
    assert '{\\"name\\":' in tools.response_format.text
    outputs = llama3_llm.chat([QUESTION] * 4, seeded(4), tools=[WEATHER], tool_choice="none")
    for output in outputs:
        assert output.outputs[0].tool_calls == [] and '{"name":' not in output.outputs[0].text
