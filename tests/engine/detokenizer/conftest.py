"""Fixtures of the detokenizer tests: the two tokenizers built in the session, and ``tokenizer``
parametrized over both (overriding the SmolLM2 tokenizer fixture in this folder only)."""

from __future__ import annotations

import pytest
from detok_support import build_byte_level, build_spiece
from transformers import PreTrainedTokenizerFast


@pytest.fixture(scope="module")
def byte_level() -> PreTrainedTokenizerFast:
    return build_byte_level()


@pytest.fixture(scope="module")
def spiece() -> PreTrainedTokenizerFast:
    return build_spiece()


@pytest.fixture(params=["byte_level", "spiece"])
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return request.getfixturevalue(request.param)
