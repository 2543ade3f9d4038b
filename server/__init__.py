"""The OpenAI-compatible HTTP server (FastAPI + uvicorn) over AsyncLLM.

``ServerConfig`` says what to serve; ``build_app(llm, config)`` makes the FastAPI app over an
AsyncLLM (or a list of them: data-parallel replicas); ``run_server(config)`` loads the model and
serves until SIGTERM/SIGINT. ``build_app`` and ``run_server`` are imported on first use, so that
reading a config (the CLI parsing its flags) does not import FastAPI, uvicorn and the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loomlm.server.config import ServerConfig

if TYPE_CHECKING:
    from loomlm.server.app import build_app
    from loomlm.server.run import run_server

__all__ = ["ServerConfig", "build_app", "run_server"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from loomlm.server.app import build_app

        return build_app
    if name == "run_server":
        from loomlm.server.run import run_server

        return run_server
    raise AttributeError(f"module 'loomlm.server' has no attribute {name!r}")
