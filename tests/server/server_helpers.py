"""Helpers of the server tests: a uvicorn server in a background thread, a free port and waiting for
a server process to serve, metric reading."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import uvicorn

API_KEY = "test-api-key"
ADMIN_KEY = "test-admin-key"
ENGINE_OPTIONS = dict(max_model_len=512, block_size=8, max_num_batched_tokens=512)
LORA_OPTIONS = dict(max_loras=2, max_lora_rank=16)


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class ServerThread:
    """uvicorn serving ``app`` on a free loopback port (the socket is bound here, so no race for
    the port), in a daemon thread with its own event loop."""

    def __init__(self, app) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the test server did not stop"

    def client(self, api_key: str = API_KEY, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60, **options)

    def async_client(self, api_key: str = API_KEY, **options) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60, **options
        )

    def http(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def metric(text: str, name: str) -> float:
    """The value of the first sample of ``name`` in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float) -> list[int]:
    """The /health statuses seen until the first 200."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server process exited while starting"
        try:
            seen.append(httpx.get(f"{url}/health", timeout=2).status_code)
            if seen[-1] == 200:
                return seen
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    raise AssertionError(f"the server did not start serving within {timeout} s")


def assert_drained_after_sigterm(late, health, outcomes, process) -> None:
    """After SIGTERM under load: a late request got 503 shutting_down, /health said draining, every
    client completed or failed cleanly (some were aborted at the drain timeout), and the server exited 0."""
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert all(o == "completed" or o.startswith("failed") for o in outcomes), outcomes
    assert any(o.startswith("failed") for o in outcomes), "nothing was left to abort"
    assert process.wait(timeout=30) == 0


def start_serve_model(model_dir, log_path, *args: str):
    """``serve_model.py MODEL PORT *args`` as a subprocess logging to ``log_path``: (process, url).
    The caller waits for it (`wait_until_serving`) and kills it if it is still running at the end."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("serve_model.py")),
                str(model_dir),
                str(port),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"
