"""Fixtures for the adapter tests: the LoRABaseSpec of the tiny test Llamas."""

import pytest
from transformers import AutoConfig

from loomlm.adapters.spec import LoRABaseSpec
from loomlm.engine.models.arch import LlamaArch


def _spec_of(model_dir) -> LoRABaseSpec:
    return LlamaArch.from_hf_config(AutoConfig.from_pretrained(model_dir)).lora_spec()


@pytest.fixture(scope="session")
def spec_of():
    """``model_dir -> LoRABaseSpec`` read from the directory's config.json."""
    return _spec_of


@pytest.fixture(scope="session")
def spec(tiny_llama_dir) -> LoRABaseSpec:
    return _spec_of(tiny_llama_dir)
