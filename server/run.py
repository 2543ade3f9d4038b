"""``run_server(config)``: serve until SIGTERM or SIGINT, then shut down gracefully; returns 0.

Order of events:

1. uvicorn starts at once with the app and no model: /health answers 503 "loading", and so does
   every other route. The model loads on a worker thread (``data_parallel_size`` times, one replica
   after the other), then ``config.adapters`` into every replica; then serving.
2. The first SIGTERM or SIGINT starts the drain: new requests get 503 (and /health 503), requests
   in flight (on every replica) get up to ``shutdown_timeout`` seconds to finish, the rest are
   aborted (streams end with an error event, waiting responses with 503), the engines stop, then
   uvicorn closes its connections and exits. A second SIGINT skips the wait.

uvicorn's own signal handling is replaced: it would stop accepting connections at once (clients
would see refused connections instead of 503s) and re-raise the signal after exiting, so that the
process would die by it instead of exiting 0. A failure to load the model or an adapter is raised
to the caller once the HTTP server has stopped; an HTTP server that cannot start (the port is
taken) returns uvicorn's exit code (3), after uvicorn logged why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from loomlm.async_llm import AsyncLLM
from loomlm.server.app import create_app
from loomlm.server.config import ServerConfig
from loomlm.server.state import Phase, ServerState

logger = logging.getLogger(__name__)

# After the engine has stopped, every response is complete or failed: this only bounds the wait for
# clients that keep their connection open.
_CONNECTION_CLOSE_TIMEOUT_S = 5.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # run_server handles the signals (see the module docstring)


def run_server(config: ServerConfig) -> int:
    """Load the model and its adapters, serve the OpenAI API on ``config.host:config.port`` and block
    until a signal has shut it down (returns 0). Raises what made loading fail; returns uvicorn's
    nonzero exit code if the HTTP server cannot start."""
    return asyncio.run(_serve(config))


async def _serve(config: ServerConfig) -> int:
    state = ServerState(config)
    server = _Server(
        uvicorn.Config(
            create_app(state),
            host=config.host,
            port=config.port,
            timeout_graceful_shutdown=_CONNECTION_CLOSE_TIMEOUT_S,
        )
    )
    lifecycle = _Lifecycle(state, server)
    lifecycle.install_signal_handlers()
    loader = asyncio.create_task(lifecycle.load())
    try:
        await server.serve()
    except SystemExit as exit_:  # uvicorn exits on a startup failure (the port is taken...)
        code = exit_.code if isinstance(exit_.code, int) else 1
        logger.error("the HTTP server failed to start (exit code %s)", code)
        return code
    finally:
        lifecycle.stopping = True
        with contextlib.suppress(BaseException):
            await loader  # a thread cannot be interrupted: the model finishes loading, then is closed
        await lifecycle.close()
        lifecycle.remove_signal_handlers()
    if lifecycle.load_error is not None:
        raise lifecycle.load_error
    return 0


class _Lifecycle:
    """Loading, draining and closing of one run_server's AsyncLLMs (its replicas)."""

    def __init__(self, state: ServerState, server: _Server) -> None:
        self.state = state
        self.server = server
        self.stopping = False
        self.load_error: Exception | None = None
        self._drain: asyncio.Task | None = None
        self._signals: list[int] = []

    async def load(self) -> None:
        config = self.state.config
        llms: list[AsyncLLM] = []
        try:
            # One replica after the other: the first load may convert the default model into the
            # cache, which the others then read; and a failure stops before loading the rest.
            while len(llms) < config.data_parallel_size and not self.stopping:
                llms.append(await asyncio.to_thread(lambda: AsyncLLM(config.model, **config.engine_kwargs())))
        except Exception as error:
            await _shutdown_all(llms)
            self._fail(error)
            return
        if self.stopping:  # a signal came while loading
            await _shutdown_all(llms)
            return
        try:
            self.state.attach(llms)
            await self.state.start()
        except Exception as error:
            if self.state.replicas is None:  # not attached: close() would not find them
                await _shutdown_all(llms)
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        logger.error("could not load the model or its adapters: %s", error)
        self.load_error = error
        self.server.should_exit = True

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread receives signals; the embedding code stops the server
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)
            self._signals.append(sig)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    def on_signal(self, sig: int) -> None:
        if self._drain is None:
            logger.info("%s: draining (up to %.1f s), then exiting", signal.Signals(sig).name,
                        self.state.config.shutdown_timeout)  # fmt: skip
            self._drain = asyncio.create_task(self.drain(self.state.config.shutdown_timeout))
        elif sig == signal.SIGINT:
            logger.info("second SIGINT: aborting every request now")
            self._drain = asyncio.create_task(self.drain(0.0))

    async def drain(self, timeout: float) -> None:
        """Stop taking requests, give those in flight ``timeout`` seconds, abort the rest, stop the
        engine; then let uvicorn close its connections and exit."""
        self.stopping = True
        self.state.phase = Phase.DRAINING
        replicas = self.state.replicas
        if replicas is not None:
            try:
                await replicas.shutdown(drain_timeout=timeout)  # every replica drains at once
            except Exception:  # an engine may have failed already; exiting is still right
                logger.exception("error while shutting the engines down")
        self.server.should_exit = True

    async def close(self) -> None:
        if self.state.replicas is not None:
            await self.state.replicas.shutdown()  # idempotent: after a drain this only returns


async def _shutdown_all(llms: list[AsyncLLM]) -> None:
    for llm in llms:
        with contextlib.suppress(Exception):
            await llm.shutdown()
