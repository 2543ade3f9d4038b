"""Grammar bitmask apply: reference and Triton forbid exactly the tokens whose bit is 0, on the listed
rows only, for vocabularies that are and are not multiples of 32."""

from __future__ import annotations

import os

import pytest
import torch

from loomlm.kernels.token_bitmask import (
    apply_token_bitmask,
    apply_token_bitmask_ref,
    apply_token_bitmask_triton,
)

needs_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton needs CUDA or TRITON_INTERPRET=1 set before triton is imported",
)


def make_case(num_rows, vocab, extra_words=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, vocab, generator=gen)
    num_words = -(-vocab // 32) + extra_words
    allowed = torch.rand(num_rows, num_words * 32, generator=gen) < 0.3
    weights = torch.tensor([1 << b for b in range(32)], dtype=torch.int64)
    packed = (allowed.view(num_rows, num_words, 32).long() * weights).sum(-1)
    bitmask = torch.where(packed >= 1 << 31, packed - (1 << 32), packed).to(torch.int32)
    return logits, bitmask, allowed[:, :vocab]


def expected(logits, allowed, rows):
    out = logits.clone()
    for r in rows:
        out[r, ~allowed[r]] = float("-inf")
    return out


@pytest.mark.parametrize("vocab", [32, 50, 1000, 49152])
@pytest.mark.parametrize("rows", [[0, 1, 2, 3], [2], [], [3, 0]])
def test_reference_masks_exactly_the_cleared_bits_of_listed_rows(vocab, rows):
    logits, bitmask, allowed = make_case(4, vocab, seed=vocab)
    want = expected(logits, allowed, rows)
    apply_token_bitmask_ref(logits, bitmask, torch.tensor(rows, dtype=torch.int64))
    assert torch.equal(logits, want)


def test_bit_31_of_a_negative_word_reads_as_allowed():
    logits = torch.zeros(1, 32)
    bitmask = torch.tensor([[-(1 << 31)]], dtype=torch.int32)  # only bit 31 set
    apply_token_bitmask_ref(logits, bitmask, torch.tensor([0]))
    assert torch.isfinite(logits[0, 31]) and torch.isinf(logits[0, :31]).all()


def test_wider_bitmask_than_vocab_is_accepted_and_narrower_is_refused():
    logits, bitmask, allowed = make_case(2, 70, extra_words=3)
    want = expected(logits, allowed, [0, 1])
    apply_token_bitmask(logits, bitmask, torch.tensor([0, 1]))
    assert torch.equal(logits, want)
    with pytest.raises(ValueError, match="cannot cover"):
        apply_token_bitmask_ref(torch.zeros(1, 100), torch.zeros(1, 3, dtype=torch.int32), torch.tensor([0]))
    with pytest.raises(ValueError, match="int32"):
        apply_token_bitmask_ref(torch.zeros(1, 32), torch.zeros(1, 1, dtype=torch.int64), torch.tensor([0]))


@needs_triton
@pytest.mark.parametrize("vocab,rows", [(32, [0]), (100, [1, 3]), (1500, [0, 1, 2, 3]), (2049, [])])
def test_triton_matches_reference(vocab, rows):
    logits, bitmask, _ = make_case(4, vocab, seed=7)
    index = torch.tensor(rows, dtype=torch.int64)
    want = logits.clone()
    apply_token_bitmask_ref(want, bitmask, index)
    apply_token_bitmask_triton(logits, bitmask, index)
    assert torch.equal(logits, want)


@needs_triton
def test_triton_keeps_dtype_and_leaves_unlisted_rows_alone():
    logits, bitmask, _ = make_case(3, 96, seed=3)
    logits = logits.to(torch.bfloat16)
    before = logits.clone()
    want = logits.clone()
    apply_token_bitmask_ref(want, bitmask, torch.tensor([1]))
    apply_token_bitmask_triton(logits, bitmask, torch.tensor([1]))
    assert torch.equal(logits, want)
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
