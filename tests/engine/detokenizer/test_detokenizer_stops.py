"""Stop strings as the scheduler runs them: the detokenizer decodes, the StopChecker decides, the
detokenizer is cut. Matches spanning tokens, the earliest match, a partial match held back while
streaming and released on divergence or at the end, multibyte characters."""

from __future__ import annotations

import pytest
from detok_support import Sequence, char_ids, continuation, enc, stream

from loomlm.engine.detokenizer import IncrementalDetokenizer
from loomlm.engine.sampling_params import SamplingParams

# -- stop strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_spanning_tokens(tokenizer, include: bool) -> None:
    out = char_ids(tokenizer, "say hello STOP and more")
    detok, deltas, hit = stream(
        tokenizer, enc(tokenizer, "hi"), out, stop=["STOP"], include_stop_str_in_output=include
    )
    assert hit == "STOP"
    assert len(deltas) == len(char_ids(tokenizer, "say hello STOP"))  # stopped at the "P"
    want = continuation(tokenizer, enc(tokenizer, "hi"), char_ids(tokenizer, "say hello "))
    want += "STOP" if include else ""
    assert detok.output_text == "".join(deltas) == want
    # Deltas never showed part of the stop string unless it is included.
    assert include or not any("S" in d for d in deltas)


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_across_two_natural_tokens(byte_level, include: bool) -> None:
    out = enc(byte_level, "hello world the end")
    first, second = byte_level.decode(out[:1]), byte_level.decode(out[1:2])
    assert len(first) >= 2 and len(second) >= 2
    stop = first[-2:] + second[:2]  # the last 2 characters of one token, the first 2 of the next
    detok, deltas, hit = stream(byte_level, [], out, stop=[stop], include_stop_str_in_output=include)
    assert hit == stop and len(deltas) == 2
    want = first + second[:2] if include else first[:-2]
    assert detok.output_text == "".join(deltas) == want


@pytest.mark.parametrize(
    ("stops", "want"), [(["xyz", "abc"], "abc"), (["abc", "xyz"], "abc"), (["cxyz", "bcx"], "bcx")]
)
def test_earliest_match_wins(tokenizer, stops: list[str], want: str) -> None:
    text = "0abcxyz tail"
    seq = Sequence(tokenizer, [], stop=stops)
    assert seq.feed(char_ids(tokenizer, text)) == want  # one update holding both matches
    assert seq.detok.output_text == text[: text.index(want)]
    assert seq.detok.get_delta(finished=True) == seq.detok.output_text


def test_earlier_stop_over_the_boundary_beats_later_one_in_new_text(tokenizer) -> None:
    seq = Sequence(tokenizer, [], stop=["END", "abc"])
    assert seq.feed(char_ids(tokenizer, "xx EN")) is None
    assert seq.feed(char_ids(tokenizer, "D abc")) == "END"
    assert seq.detok.output_text == "xx "


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_at_the_very_start(tokenizer, include: bool) -> None:
    detok, deltas, hit = stream(
        tokenizer,
        enc(tokenizer, "Q:"),
        char_ids(tokenizer, "Hi there"),
        stop=["Hi"],
        include_stop_str_in_output=include,
    )
    assert hit == "Hi" and len(deltas) == 2
    assert detok.output_text == "".join(deltas) == ("Hi" if include else "")


def test_streaming_holds_back_a_partial_stop_and_releases_on_divergence(tokenizer) -> None:
    text = "abc STAR def"
    detok, deltas, hit = stream(tokenizer, [], char_ids(tokenizer, text), stop=["STOP"])
    assert hit is None
    assert deltas[:4] == ["a", "b", "c", " "]  # no stop prefix: nothing is delayed
    assert deltas[4:7] == ["", "", "STA"]  # "S", "ST" held back; "STA" is no prefix of "STOP"
    assert "".join(deltas) == detok.output_text == text


def test_held_back_prefix_is_released_when_finished(tokenizer) -> None:
    detok = IncrementalDetokenizer(tokenizer, [], SamplingParams(stop=["STOP", "\n\n"]))
    detok.update(char_ids(tokenizer, "end ST"))
    assert detok.get_delta(finished=False) == "end "
    detok.update(char_ids(tokenizer, "\n"))
    assert detok.get_delta(finished=False) == "ST"  # "ST\n" is no prefix, but "\n" still is
    assert detok.get_delta(finished=True) == "\n"
    assert detok.output_text == "end ST\n"


def test_stop_string_with_multibyte_characters(tokenizer) -> None:
    prompt = enc(tokenizer, "Q")
    out = enc(tokenizer, "hello 日本語 🎉 world")
    detok, deltas, hit = stream(tokenizer, prompt, out, stop=["本語 🎉"])
    assert hit == "本語 🎉"
    assert detok.output_text == "".join(deltas) == continuation(tokenizer, prompt, enc(tokenizer, "hello 日"))
    assert not any("\ufffd" in d or "本" in d for d in deltas)
