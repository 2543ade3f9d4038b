"""run_server's lifecycle in a real process: /health says loading (503) until the model is up, SIGTERM
under load drains (new requests and /health get 503, requests in flight finish or end with a clean
error within shutdown_timeout) and the process exits 0; a model that fails to load is raised."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from pathlib import Path

import httpx
import openai
import pytest
from server_helpers import (
    assert_drained_after_sigterm,
    free_port,
    metric,
    start_serve_model,
    wait_until_serving,
)
from uvicorn.server import STARTUP_FAILURE

HERE = Path(__file__).parent
KEY = "sigterm-key"
CHAT = [{"role": "user", "content": "Go on."}]


async def one_stream(client: openai.AsyncOpenAI, i: int) -> str:
    """ "completed", or "failed: <why>" for a clean error (an error status or an error event)."""
    try:
        stream = await client.chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=400, stream=True, seed=i, extra_body={"ignore_eos": True}
        )
        reasons = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    except openai.APIConnectionError as error:  # a dropped connection is not a clean error
        return f"connection: {error!r}"
    except openai.APIStatusError as error:
        return f"failed: {error.status_code}"
    except openai.APIError as error:  # an error event in the stream
        return f"failed: event {error.body}"
    return "completed" if reasons[-1] == "length" else f"unfinished: {reasons}"


def test_sigterm_under_load_drains_and_exits_0(tiny_llama_dir, tmp_path):
    log_path = tmp_path / "server.log"
    process, url = start_serve_model(tiny_llama_dir, log_path, "1.5")
    try:
        wait_until_serving(url, process, timeout=120)

        async def main():
            headers = {"Authorization": f"Bearer {KEY}"}
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
            tasks = [asyncio.create_task(one_stream(client, i)) for i in range(12)]
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
                for _ in range(1000):  # until two run and the rest wait
                    if metric((await http.get("/metrics")).text, "loomlm:num_requests_waiting") >= 8:
                        break
                    await asyncio.sleep(0.01)
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                late = await http.post("/v1/chat/completions", json={"model": "tiny", "messages": CHAT})
                health = await http.get("/health")
            outcomes = await asyncio.gather(*tasks)
            await client.close()
            return late, health, outcomes

        late, health, outcomes = asyncio.run(asyncio.wait_for(main(), 60))
        assert_drained_after_sigterm(late, health, outcomes, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert "Traceback" not in log, log


def test_a_model_that_fails_to_load_is_raised(tmp_path):
    from loomlm.server import ServerConfig, run_server

    config = ServerConfig(model=str(tmp_path / "no-model"), port=free_port())
    raised: list[BaseException] = []

    def serve() -> None:
        try:
            run_server(config)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and len(raised) == 1
    assert isinstance(raised[0], (ValueError, FileNotFoundError, OSError)), raised


def test_a_port_in_use_returns_uvicorns_startup_failure_code(tmp_path):
    from loomlm.server import ServerConfig, run_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = ServerConfig(model=str(tmp_path / "no-model"), port=taken.getsockname()[1])
        results: list[object] = []
        thread = threading.Thread(target=lambda: results.append(run_server(config)), daemon=True)
        thread.start()
        thread.join(60)
    assert results == [STARTUP_FAILURE]  # 3, not 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"port": 70000}, "port"),
        ({"adapters": {"bad name": "."}}, "adapter name"),
        ({"adapters": {"a": "/no/such/dir"}}, "not a directory"),
        ({"enable_adapter_loading": True, "adapter_dir": "."}, "admin key"),
        ({"enable_adapter_loading": True, "admin_key": "k"}, "adapter_dir"),
        ({"enable_adapter_loading": True, "admin_key": "k", "api_key": "k", "adapter_dir": "."}, "differ"),
        ({"max_waiting": 0}, "max_waiting"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"api_key": ""}, "non-empty"),
        ({"engine_options": {"max_waiting": 3}}, "ServerConfig"),
        ({"engine_options": {"no_such_option": 1}}, "unknown engine options"),
        ({"data_parallel_size": 0}, "data_parallel_size must be an integer >= 1"),
        ({"data_parallel_size": 1.5}, "data_parallel_size"),
        ({"routing": "random"}, "routing must be one of affinity, round_robin"),
        ({"routing_max_imbalance": -1}, "routing_max_imbalance"),
    ],
)
def test_server_config_refuses_bad_settings_with_guidance(options, match):
    from loomlm.server import ServerConfig

    with pytest.raises(ValueError, match=match):
        ServerConfig(**options)


def test_server_config_reads_keys_from_the_environment(monkeypatch):
    from loomlm.server import ServerConfig

    monkeypatch.setenv("LOOMLM_API_KEY", "from-env")
    monkeypatch.setenv("LOOMLM_ADMIN_KEY", "admin-env")
    config = ServerConfig(enable_adapter_loading=True, adapter_dir=".")
    assert (config.api_key, config.admin_key) == ("from-env", "admin-env")
    assert config.engine_kwargs()["enable_lora"] is True
