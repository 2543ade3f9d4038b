"""Fixtures of the server tests: a tiny random Llama (the real SmolLM2 tokenizer) behind an AsyncLLM
with LoRA, served by a real uvicorn on a loopback port in a background thread; clients are the
official ``openai`` client and httpx.

The main server (``server``) requires an API key, enables runtime adapter loading (admin key,
adapter directory) and serves two adapters from the start, so most tests run under auth."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server_helpers import ADMIN_KEY, API_KEY, ENGINE_OPTIONS, LORA_OPTIONS, ServerThread, run


@pytest.fixture(scope="session", autouse=True)
def _no_keys_from_the_environment() -> Iterator[None]:
    saved = {name: os.environ.pop(name, None) for name in ("LOOMLM_API_KEY", "LOOMLM_ADMIN_KEY")}
    yield
    for name, value in saved.items():
        if value is not None:
            os.environ[name] = value


@pytest.fixture(scope="session")
def llm(tiny_llama_dir):
    from loomlm import AsyncLLM

    llm = AsyncLLM(str(tiny_llama_dir), **ENGINE_OPTIONS, **LORA_OPTIONS)
    yield llm
    run(llm.shutdown())


@pytest.fixture(scope="session")
def caller_llama_dir(bigram_dir) -> Path:
    """The bigram model of the function-calling tests (``tests/conftest.py``): it favours ``<`` then
    ``tool_call>``, ending strings and ending the answer, so under a tool-call grammar it calls."""
    return bigram_dir


@pytest.fixture(scope="session")
def caller(caller_llama_dir) -> Iterator[openai.OpenAI]:
    """A client of a server over the caller model (tool-call tests)."""
    from loomlm import AsyncLLM
    from loomlm.server import ServerConfig, build_app

    llm = AsyncLLM(str(caller_llama_dir), max_model_len=1024, block_size=8, max_num_batched_tokens=512)
    thread = ServerThread(build_app(llm, ServerConfig(served_model_name="tiny", api_key=API_KEY))).start()
    yield thread.client()
    thread.stop()
    run(llm.shutdown())


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory, tiny_lora_adapters) -> dict[str, Path]:
    """``root``: the server's adapter_dir, holding copies of all8 and rs4 (``all8``, ``rs4``) and a
    symlink ``escape`` to an adapter outside it; ``outside``: that adapter."""
    base = tmp_path_factory.mktemp("served_adapters")
    root, outside = base / "adapters", base / "outside"
    root.mkdir()
    for name in ("all8", "rs4"):
        shutil.copytree(tiny_lora_adapters[name], root / name)
    shutil.copytree(tiny_lora_adapters["all8b"], outside)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return {"root": root, "outside": outside, "all8": root / "all8", "rs4": root / "rs4"}


@pytest.fixture(scope="session")
def server(llm, adapter_dirs) -> Iterator[ServerThread]:
    from loomlm.server import ServerConfig, build_app

    config = ServerConfig(
        served_model_name="tiny",
        api_key=API_KEY,
        admin_key=ADMIN_KEY,
        adapters={"ad1": str(adapter_dirs["all8"]), "ad2": str(adapter_dirs["rs4"])},
        adapter_dir=str(adapter_dirs["root"]),
        enable_adapter_loading=True,
        max_request_bytes=256 << 10,
    )
    thread = ServerThread(build_app(llm, config)).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return server.client()


@pytest.fixture
def make_server(tiny_llama_dir):
    """Servers over their own AsyncLLMs (``engine`` options on top of ENGINE_OPTIONS), stopped and
    shut down after the test."""
    from loomlm import AsyncLLM
    from loomlm.server import ServerConfig, build_app

    made: list[tuple[ServerThread, AsyncLLM]] = []

    def make(config: ServerConfig | None = None, **engine) -> tuple[ServerThread, AsyncLLM]:
        config = config or ServerConfig(served_model_name="tiny", api_key=API_KEY)
        llm = AsyncLLM(str(tiny_llama_dir), max_waiting=config.max_waiting, **{**ENGINE_OPTIONS, **engine})
        made.append((ServerThread(build_app(llm, config)).start(), llm))
        return made[-1]

    yield make
    for thread, llm in made:
        thread.stop()
        run(llm.shutdown())
