"""IncrementalDetokenizer: streaming text equals a full decode, split characters; stop strings as
the scheduler runs them (the detokenizer decodes, the StopChecker decides, the detokenizer is cut).

Tokenizers are built in the test session (no downloads): a byte-level BPE (GPT-2 / SmolLM2 style)
and a SentencePiece-style BPE with byte fallback (Llama-2 style decoders).
"""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from loomlm.engine.detokenizer import IncrementalDetokenizer
from loomlm.engine.request import Request
from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.stop_checker import StopChecker

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PIECES = [
    "hello",
    " world",
    "héllo",
    " wörld",
    "你好",
    " 世界",
    "🙂",
    "🎉",
    "日本語",
    "\n",
    " ",
    ",",
    "!",
    "café",
    " naïve",
    "ß",
    "Ω",
    "👩‍💻",
    "x",
    " 42",
    " the",
    " fox",
]


@pytest.fixture(scope="module")
def byte_level() -> PreTrainedTokenizerFast:
    # Small vocabulary: common words merge, while rarer CJK/emoji stay split into single bytes.
    corpus = ["héllo wörld, hello world! the quick brown fox jumps over the lazy dog. 你好 🙂 café"] * 30
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIALS,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", clean_up_tokenization_spaces=False
    )


@pytest.fixture(scope="module")
def spiece() -> PreTrainedTokenizerFast:
    # ASCII-only training text, so every non-ASCII character (and "\n") goes through <0xXX> tokens.
    corpus = ["hello world, the quick brown fox jumps over the lazy dog! cafe naive 42 x"] * 30
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>", "<|im_end|>"], show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # the byte-fallback tokens, as a Llama vocabulary has them
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


@pytest.fixture(params=["byte_level", "spiece"])
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return request.getfixturevalue(request.param)


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def char_ids(tok, text: str) -> list[int]:
    """Ids with (at least) one token per character, so a stop string surely spans tokens."""
    vocab = tok.get_vocab()
    if "<0x41>" not in vocab:  # byte-level: a lone character encodes the same as in context
        return [i for ch in text for i in enc(tok, ch)]
    ids = []  # SentencePiece: encoding a lone character would prepend "▁", so look pieces up
    for ch in text:
        piece = "▁" if ch == " " else ch
        ids += [vocab[piece]] if piece in vocab else [vocab[f"<0x{b:02X}>"] for b in ch.encode()]
    return ids


def continuation(tok, prompt: list[int], out: list[int], skip: bool = True) -> str:
    """The output's text as a continuation of the prompt's text (the detokenizer's contract)."""
    full = tok.decode(prompt + out, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
    head = tok.decode(prompt, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
    assert full.startswith(head)
    return full[len(head) :]


class Sequence:
    """One request fed token by token the way Scheduler.update does it: append, decode, ask the
    StopChecker, cut the text at a stop string."""

    def __init__(self, tok, prompt: list[int], **params) -> None:
        params.setdefault("max_tokens", 10_000)
        self.request = Request("r", prompt or [0], SamplingParams(**params))
        self.detok = self.request.detokenizer = IncrementalDetokenizer(tok, prompt, SamplingParams(**params))
        self.checker = StopChecker(max_model_len=1_000_000)

    def feed(self, token_ids: list[int]) -> str | None:
        """Append tokens; the stop string that ended the sequence, or None."""
        self.request.all_token_ids.extend(token_ids)
        new_text = self.detok.update(token_ids)
        decision = self.checker.check(self.request, len(new_text))
        if decision is None or decision.text_end is None:
            return None
        self.detok.truncate(decision.text_end)
        return decision.stop_reason


def stream(
    tok, prompt: list[int], out: list[int], **params
) -> tuple[IncrementalDetokenizer, list[str], str | None]:
    """Feed `out` one token at a time; return the detokenizer, the per-token deltas and the stop hit."""
    seq = Sequence(tok, prompt, **params)
    deltas: list[str] = []
    hit = None
    for i, token in enumerate(out):
        hit = seq.feed([token])
        deltas.append(seq.detok.get_delta(finished=hit is not None or i == len(out) - 1))
        if hit is not None:
            break
    return seq.detok, deltas, hit


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14)))


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
