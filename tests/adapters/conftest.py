"""Fixtures for the adapter tests: the LoRABaseSpec of the tiny test Llamas."""

import json

import pytest

from loomlm.adapters.spec import LoRABaseSpec


def _spec_of(model_dir) -> LoRABaseSpec:
    config = json.loads((model_dir / "config.json").read_text())
    return LoRABaseSpec.for_llama(
        model_type=config["model_type"],
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config["num_key_value_heads"],
        head_dim=config["hidden_size"] // config["num_attention_heads"],
    )


@pytest.fixture(scope="session")
def spec_of():
    """``model_dir -> LoRABaseSpec`` read from the directory's config.json."""
    return _spec_of


@pytest.fixture(scope="session")
def spec(tiny_llama_dir) -> LoRABaseSpec:
    return _spec_of(tiny_llama_dir)
