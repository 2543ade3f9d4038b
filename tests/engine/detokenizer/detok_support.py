"""Tokenizers the detokenizer tests build in the session (no downloads): a byte-level BPE (GPT-2 /
SmolLM2 style) and a SentencePiece-style BPE with byte fallback (Llama-2 style decoders); and a
request fed token by token the way the scheduler feeds it."""

from __future__ import annotations

import json
import random

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


def build_byte_level() -> PreTrainedTokenizerFast:
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


def build_spiece() -> PreTrainedTokenizerFast:
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
