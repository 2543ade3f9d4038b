"""Fixtures for the command line tests: the tiny random Llama (SmolLM2 tokenizer) of
tests/conftest.py, the engine options every command gets, and an offline LLM with the same
options to compare outputs against."""

from __future__ import annotations

import pytest

from loomlm.cli.common import setup_logging

# Small engine sizes: every command loads its own engine.
ENGINE_ARGS = ["--max-model-len", "256", "--block-size", "8", "--max-num-batched-tokens", "64"]
ENGINE_KWARGS = dict(max_model_len=256, block_size=8, max_num_batched_tokens=64)


@pytest.fixture(scope="session")
def model_args(tiny_llama_dir) -> list[str]:
    """``--model DIR`` plus the engine options, to append to a command line."""
    return ["--model", str(tiny_llama_dir), *ENGINE_ARGS]


@pytest.fixture(scope="session")
def engine_kwargs() -> dict:
    """The engine options of ``model_args`` as LLM keyword arguments."""
    return dict(ENGINE_KWARGS)


@pytest.fixture(scope="session")
def offline(tiny_llama_dir):
    """An offline LLM on the same model and engine options, the reference for outputs."""
    from loomlm import LLM

    llm = LLM(str(tiny_llama_dir), **ENGINE_KWARGS)
    yield llm
    llm.engine.close()


@pytest.fixture(autouse=True)
def _quiet_logging():
    """``-v`` configures the loomlm logger; leave it as found."""
    yield
    setup_logging(0)
