"""IncrementalDetokenizer: streaming text equals a full decode, split characters wait until complete,
special tokens follow skip_special_tokens, the decode window stays small; and the real SmolLM2
tokenizer. Stop strings: test_detokenizer_stops.py."""

from __future__ import annotations

import random

import pytest
from detok_support import continuation, enc, random_text, stream

from loomlm.engine.detokenizer import IncrementalDetokenizer
from loomlm.engine.sampling_params import SamplingParams

# -- text equals a full decode ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(25))
def test_incremental_text_matches_full_decode(tokenizer, seed: int) -> None:
    rng = random.Random(seed)
    prompt = enc(tokenizer, "User: say something\nAssistant:")
    out = enc(tokenizer, random_text(rng))
    final = continuation(tokenizer, prompt, out)
    detok = IncrementalDetokenizer(tokenizer, prompt, SamplingParams())
    deltas = []
    for i, token in enumerate(out, start=1):
        detok.update([token])
        # After each token: at least what a full decode shows complete, and never anything that
        # is not in the final text. (ByteFallback turns a whole run of byte tokens into U+FFFDs
        # while its last character is unfinished, so the detokenizer may be ahead of decode().)
        assert detok.output_text.startswith(continuation(tokenizer, prompt, out[:i]).rstrip("\ufffd"))
        assert final.startswith(detok.output_text)
        deltas.append(detok.get_delta(finished=i == len(out)))
    assert detok.output_text == final
    assert "".join(deltas) == detok.output_text
    assert not any("\ufffd" in d for d in deltas)
    if not tokenizer.convert_ids_to_tokens(out[0]).startswith("▁"):
        assert detok.output_text == tokenizer.decode(out)  # always so for byte-level BPE


def test_sentencepiece_output_keeps_leading_space_of_prompt_continuation(spiece) -> None:
    prompt, out = enc(spiece, "Assistant:"), enc(spiece, "hello world")
    detok, deltas, _ = stream(spiece, prompt, out)
    assert spiece.decode(out) == "hello world"  # decode() alone strips the "▁" of the first token
    assert detok.output_text == " hello world" == "".join(deltas)


def test_many_tokens_per_update_and_no_prompt(tokenizer) -> None:
    text = "héllo 你好 🙂 wörld 日本語 👩‍💻!"
    out = enc(tokenizer, text)
    detok = IncrementalDetokenizer(tokenizer, [], SamplingParams())
    for start in range(0, len(out), 3):
        detok.update(out[start : start + 3])
    assert detok.get_delta(finished=True) == detok.output_text == tokenizer.decode(out) == text


@pytest.mark.parametrize("char", ["日", "🎉"])
def test_split_character_emits_nothing_until_complete(tokenizer, char: str) -> None:
    prompt = enc(tokenizer, "x")
    out = enc(tokenizer, " a" + char)
    detok, deltas, _ = stream(tokenizer, prompt, out)
    assert len(out) >= 3 and deltas[-2] == ""  # the character's first byte(s) alone emit nothing
    assert deltas[-1].endswith(char) and not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) == detok.output_text == continuation(tokenizer, prompt, out)


def test_incomplete_bytes_at_the_end_are_flushed_as_decode_shows_them(tokenizer) -> None:
    out = enc(tokenizer, "ok 日")[:-1]  # generation ended one byte short of the character
    detok = IncrementalDetokenizer(tokenizer, [], SamplingParams())
    detok.update(out)
    assert "\ufffd" not in detok.output_text and detok.get_delta(finished=False) == "ok "
    assert detok.get_delta(finished=True) == detok.output_text[3:]
    assert detok.output_text == tokenizer.decode(out) and detok.output_text.endswith("\ufffd")


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens_follow_skip_special_tokens(byte_level, skip: bool) -> None:
    im_start, im_end = byte_level.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    prompt = [im_start, *enc(byte_level, "assistant\n")]
    out = [*enc(byte_level, "hello 你好"), im_end, *enc(byte_level, " world")]
    detok, deltas, _ = stream(byte_level, prompt, out, skip_special_tokens=skip)
    assert detok.output_text == byte_level.decode(out, skip_special_tokens=skip) == "".join(deltas)
    assert ("<|im_end|>" in detok.output_text) is not skip


def test_window_stays_small(byte_level) -> None:
    class Counting:  # decode() spy: the detokenizer must never re-decode the whole output
        def __init__(self, tok) -> None:
            self.tok, self.longest = tok, 0

        def decode(self, ids, **kwargs):
            self.longest = max(self.longest, len(ids))
            return self.tok.decode(ids, **kwargs)

    spy = Counting(byte_level)
    out = enc(byte_level, "hello world 你好 🙂 日本語 " * 60)
    detok = IncrementalDetokenizer(spy, enc(byte_level, "prompt " * 50), SamplingParams())
    for token in out:
        detok.update([token])
    assert detok.output_text == byte_level.decode(out)
    assert len(out) > 400 and spy.longest <= 12


def test_decode_token(byte_level, spiece) -> None:
    (world,) = enc(byte_level, " world")[-1:]
    assert (
        byte_level.convert_ids_to_tokens(world) == "Ġworld"
        and IncrementalDetokenizer(byte_level, [], SamplingParams()).decode_token(world) == " world"
    )
    sp = IncrementalDetokenizer(spiece, [], SamplingParams())
    hello = enc(spiece, "hello")[0]
    assert spiece.convert_ids_to_tokens(hello).startswith("▁")
    assert sp.decode_token(hello).startswith(" ")
    assert sp.decode_token(spiece.convert_tokens_to_ids("<0x0A>")) == "\n"
    assert sp.decode_token(spiece.convert_tokens_to_ids("<0xE6>")) == "<0xE6>"  # a lone lead byte
    assert sp.decode_token(spiece.convert_tokens_to_ids("</s>")) == "</s>"


# -- the real SmolLM2 tokenizer, when another step has converted it ----------------------------------


def test_smollm2_tokenizer(smollm2_dir) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)  # the default model, found like the engine finds it
    rng = random.Random(7)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    if not isinstance(prompt, list):  # some versions return a BatchEncoding
        prompt = list(prompt["input_ids"])
    for _ in range(20):
        text = random_text(rng)
        out = [*enc(tok, text), tok.convert_tokens_to_ids("<|im_end|>")]
        detok, deltas, _ = stream(tok, prompt, out)
        assert (
            detok.output_text
            == text
            == tok.decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )
        assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)
    _, deltas, _ = stream(tok, prompt, enc(tok, " a🎉"))  # the emoji is split over 3 byte tokens
    assert deltas == [" a", "", "", "🎉"]
    detok, deltas, hit = stream(tok, prompt, enc(tok, "The answer is 42.\n\nBye"), stop=["\n\n"])
    assert hit == "\n\n" and detok.output_text == "".join(deltas) == "The answer is 42."
