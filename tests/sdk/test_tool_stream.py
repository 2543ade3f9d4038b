"""``ToolCallStreamer``: a scripted text with two calls, split at every boundary, streams as OpenAI
deltas (content, then each call's header and argument fragments) that add up to what the whole-text
parser reads; only what may still become a call is held back."""

from __future__ import annotations

import json

from tool_support import call_text, get_weather, search

from loomlm import ToolCallStreamer
from loomlm.grammar.tool_specs import parse_tool_calls
from loomlm.tool_functions import as_tool

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
