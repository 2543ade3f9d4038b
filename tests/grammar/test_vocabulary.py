"""TokenVocabulary: every token's bytes, from byte-level BPE and from SentencePiece-style tokenizers;
special tokens excluded; the digest identifies the vocabulary."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from loomlm.grammar.vocabulary import END_MARKER, TokenVocabulary


@pytest.fixture(scope="module")
def smollm2_vocabulary(tokenizer):
    return TokenVocabulary.from_tokenizer(tokenizer, 49152)


def test_byte_level_tokens_spell_exactly_what_the_tokenizer_decodes(tokenizer, smollm2_vocabulary):
    checked = 0
    for token_id in range(17, 49152, 7):
        token = smollm2_vocabulary.token_bytes[token_id]
        try:
            text = token.decode()
        except UnicodeDecodeError:
            continue  # a partial UTF-8 sequence decodes only together with its neighbours
        assert text == tokenizer.decode([token_id]), token_id
        checked += 1
    assert checked > 6000


def test_byte_level_space_and_newline_pieces_map_to_real_bytes(tokenizer, smollm2_vocabulary):
    space_hello = tokenizer.convert_tokens_to_ids("Ġhello")
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    assert smollm2_vocabulary.token_bytes[space_hello] == b" hello"
    assert smollm2_vocabulary.token_bytes[newline] == b"\n"


def test_special_tokens_are_excluded_and_eos_is_kept_apart(tokenizer, smollm2_vocabulary):
    for special in tokenizer.all_special_ids:
        assert smollm2_vocabulary.token_bytes[special] is None
    assert smollm2_vocabulary.eos_token_id == tokenizer.eos_token_id
    grouped = smollm2_vocabulary.to_outlines_map()
    assert all(tokenizer.eos_token_id not in ids for ids in grouped.values())
    marker = END_MARKER.encode()
    prefixes = tuple(marker[:n] for n in range(1, len(marker)))
    usable = [t for t in smollm2_vocabulary.token_bytes if t is not None and not t.endswith(prefixes)]
    assert len(usable) > 49_000  # only tokens that could start spelling the marker are left out
    assert grouped.pop(marker) == [smollm2_vocabulary.end_marker_token_id]
    assert sum(len(ids) for ids in grouped.values()) == len(usable)


def test_digest_depends_on_tokens_size_and_eos():
    base = TokenVocabulary((b"a", b"b", None), (2,), 3)
    assert base.digest == TokenVocabulary((b"a", b"b", None), (2,), 3).digest
    assert base.digest != TokenVocabulary((b"a", b"c", None), (2,), 3).digest
    assert base.digest != TokenVocabulary((b"a", b"b", None), (2,), 4).digest
    assert base.digest != TokenVocabulary((b"a", b"b", None), (0,), 3).digest


def test_bad_vocabularies_are_refused():
    with pytest.raises(ValueError, match="EOS"):
        TokenVocabulary((b"a",), (), 1)
    with pytest.raises(ValueError, match="do not fit"):
        TokenVocabulary((b"a", b"b"), (0,), 1)


def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xE2>": 4, "▁hi": 5, "a": 6, "▁": 7}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def test_sentencepiece_byte_fallback_and_word_boundary_pieces():
    vocab = TokenVocabulary.from_tokenizer(sentencepiece_tokenizer())
    assert vocab.token_bytes[:3] == (None, None, None)  # unk, bos, eos are special
    assert vocab.token_bytes[3] == b"\n"
    assert vocab.token_bytes[4] == b"\xe2"
    assert vocab.token_bytes[5] == b" hi"
    assert vocab.token_bytes[6] == b"a"
    assert vocab.token_bytes[7] == b" "
    assert vocab.eos_token_id == 2


def test_vocab_size_beyond_the_tokenizer_leaves_unused_ids_out(tokenizer):
    vocab = TokenVocabulary.from_tokenizer(tokenizer, 49152 + 64)
    assert vocab.size == 49152 + 64
    assert len(vocab.token_bytes) == 49152
