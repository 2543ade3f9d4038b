"""Fixtures shared by the AsyncLLM tests: AsyncLLMs over the tiny random Llama (modules that
define their own ``llm`` fixture override this one)."""

from __future__ import annotations

import pytest
from async_support import ASYNC_OPTIONS, run

from loomlm import AsyncLLM


@pytest.fixture(scope="module")
def llm(tiny_llama_dir):
    """One AsyncLLM shared by the tests of a module that leave it running."""
    llm = AsyncLLM(str(tiny_llama_dir), **ASYNC_OPTIONS)
    yield llm
    run(llm.shutdown())


@pytest.fixture
def make_llm(tiny_llama_dir):
    """AsyncLLMs a test may crash or shut down; shut down after it."""
    made: list[AsyncLLM] = []

    def make(**options) -> AsyncLLM:
        made.append(AsyncLLM(str(tiny_llama_dir), **{**ASYNC_OPTIONS, **options}))
        return made[-1]

    yield make
    for llm in made:
        run(llm.shutdown())
