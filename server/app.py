"""The FastAPI application: routes, OpenAI error bodies, and the middleware stack (HTTP counts,
bearer keys, body bound).

``build_app(llm, config)`` serves an AsyncLLM built elsewhere (tests, embedding), or a list of them
(``config.data_parallel_size`` replicas); the app's lifespan loads ``config.adapters`` into them and
then takes requests (until then /health says loading), and leaves the AsyncLLMs running when the
app stops: their owner shuts them down. ``run_server`` builds the app with ``create_app`` before
the model is loaded and attaches the replicas once they are."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI

import loomlm
from loomlm.async_llm import AsyncLLM
from loomlm.server import routes_admin, routes_info, routes_openai
from loomlm.server.config import ServerConfig
from loomlm.server.errors import install_error_handlers
from loomlm.server.middleware import AuthMiddleware, BodyLimitMiddleware, HttpMetrics, MetricsMiddleware
from loomlm.server.state import Phase, ServerState


def build_app(llm: AsyncLLM | Sequence[AsyncLLM], config: ServerConfig) -> FastAPI:
    """Routes over an existing AsyncLLM, or over ``config.data_parallel_size`` of them (the same
    model and options), with LoRA enabled if ``config`` names adapters or enables adapter loading.
    Serving starts with the app's lifespan (uvicorn runs it)."""
    state = ServerState(config)
    state.attach(llm)
    return create_app(state)


def create_app(state: ServerState) -> FastAPI:
    config = state.config

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.replicas is not None and state.phase is Phase.LOADING:
            await state.start()
        yield

    app = FastAPI(
        title="loomlm",
        version=loomlm.__version__,
        description="OpenAI-compatible API of a loomlm engine.",
        lifespan=lifespan,
    )
    app.state.loomlm = state
    app.state.http_metrics = metrics = HttpMetrics()
    install_error_handlers(app)
    app.include_router(routes_openai.router)
    app.include_router(routes_info.router)
    admin_paths: tuple[str, ...] = ()
    if config.enable_adapter_loading:
        app.include_router(routes_admin.router)
        admin_paths = (routes_admin.LOAD_PATH, routes_admin.UNLOAD_PATH)
    # Added innermost first: the body bound runs after the key check, the count outside both.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_request_bytes)
    app.add_middleware(
        AuthMiddleware, api_key=config.api_key, admin_key=config.admin_key, admin_paths=admin_paths
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
