"""ServerState: what the routes share. The engine replicas (a ``ReplicaSet`` of one AsyncLLM or, data
parallel, several; None while the model loads), the phase the server is in (what /health reports
and what decides whether a request is taken), the names clients use for the base model and its
adapters, and the model's bounds."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from loomlm.async_llm import AsyncLLM
from loomlm.server.config import ServerConfig
from loomlm.server.convert import Limits
from loomlm.server.errors import model_not_found, unavailable
from loomlm.server.replicas import ReplicaSet

logger = logging.getLogger(__name__)

# A prompt of more characters than max_model_len x (most characters one token covers) x this cannot
# fit the context whatever the tokenizer does (the factor covers normalizers that shrink text), so it
# is refused before the engine thread spends time tokenizing it.
_NORMALIZATION_SLACK = 2


class Phase(enum.Enum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"  # SIGTERM: requests in flight go on, new ones get 503


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.replicas: ReplicaSet | None = None
        self.phase = Phase.LOADING
        self.base_name = config.served_model_name or ""
        self.model_root = ""
        self.limits = Limits(max_model_len=1, max_prompt_chars=1)
        self.created = int(time.time())
        # name -> path of every adapter the engine has, as of the last load, unload or refresh.
        self.adapters: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    def attach(self, llms: AsyncLLM | Sequence[AsyncLLM]) -> None:
        """Take the AsyncLLM, or ``config.data_parallel_size`` of them (loaded, the same model and
        options); ``start`` then loads the configured adapters into every one."""
        llms = [llms] if isinstance(llms, AsyncLLM) else list(llms)
        if len(llms) != self.config.data_parallel_size:
            raise ValueError(
                f"got {len(llms)} AsyncLLM(s) for data_parallel_size={self.config.data_parallel_size}: "
                "give one AsyncLLM per replica (and set data_parallel_size to their number)"
            )
        needs_lora = self.config.adapters or self.config.enable_adapter_loading
        for llm in llms:
            if needs_lora and llm.engine.adapters is None:
                raise ValueError("serving adapters needs an AsyncLLM with LoRA enabled (enable_lora=True)")
        _check_same_model(llms)
        self.replicas = ReplicaSet(llms, routing=self.config.routing,
                                   max_imbalance=self.config.routing_max_imbalance)  # fmt: skip
        llm = self.replicas.primary
        engine = llm.engine
        self.model_root = str(engine.model_dir)
        self.base_name = self.config.served_model_name or Path(engine.model_dir).name
        if self.base_name in self.config.adapters:
            raise ValueError(f"adapter {self.base_name!r} has the base model's name; rename it")
        max_model_len = engine.processor.max_model_len
        self.limits = Limits(
            max_model_len, max_model_len * _max_token_chars(llm.tokenizer) * _NORMALIZATION_SLACK
        )

    async def start(self) -> None:
        """Load the configured adapters not loaded yet, then serve."""
        replicas = self._replicas()
        await self.refresh_adapters()
        for name, path in self.config.adapters.items():
            if name not in self.adapters:
                ref = await replicas.load_adapter(name, str(Path(path).expanduser()))
                self.adapters[name] = ref.path
        if self.phase is Phase.LOADING:
            self.phase = Phase.SERVING
        logger.info("serving %s (adapters: %s)", self.base_name, ", ".join(sorted(self.adapters)) or "none")
        if len(replicas) > 1:
            logger.info("%d data-parallel replicas, routing: %s", len(replicas), self.config.routing)

    @property
    def llm(self) -> AsyncLLM | None:
        """Replica 0 (the only one without data parallelism); None while loading."""
        return None if self.replicas is None else self.replicas.primary

    @property
    def is_serving(self) -> bool:
        """Serving, and every replica admits requests."""
        return self.phase is Phase.SERVING and self.replicas is not None and self.replicas.is_running

    def health(self) -> str:
        """What /health reports: ok while serving (every replica running), else loading, draining
        or stopped."""
        if self.replicas is None or self.phase is Phase.LOADING:
            return "loading"
        if self.is_serving:
            return "ok"
        return "draining" if self.phase is Phase.DRAINING or self.replicas.is_draining else "stopped"

    def serving_replicas(self) -> ReplicaSet:
        """The replicas, while they take requests; 503 while loading, draining or stopped."""
        if self.phase is Phase.LOADING or self.replicas is None:
            raise unavailable("The model is loading; retry shortly.", code="model_loading")
        if not self.is_serving:
            raise unavailable("The server is shutting down and takes no new requests.", code="shutting_down")
        return self.replicas

    # -- models and adapters ----------------------------------------------------------------------
    async def resolve_model(self, name: str | None) -> str | None:
        """The adapter a request's ``model`` names (None: the base model); 404 for an unknown name.
        An adapter loaded straight through the AsyncLLM is found by one refresh."""
        if name is None or name == self.base_name:
            return None
        if name not in self.adapters:
            await self.refresh_adapters()
        if name not in self.adapters:
            raise model_not_found(name)
        return name

    async def refresh_adapters(self) -> None:
        replicas = self._replicas()
        self.adapters = {ref.name: ref.path for ref in await replicas.list_adapters()}

    def adapter_lock(self, name: str) -> asyncio.Lock:
        """One lock per adapter name: a load and an unload of one name never interleave, so the
        names this state lists follow the engine's."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def _replicas(self) -> ReplicaSet:
        if self.replicas is None:
            raise unavailable("The model is loading; retry shortly.", code="model_loading")
        return self.replicas


def _check_same_model(llms: list[AsyncLLM]) -> None:
    """Replicas are interchangeable only if they serve the same model within the same bounds."""
    first = llms[0].engine
    for index, llm in enumerate(llms[1:], start=1):
        engine = llm.engine
        if str(engine.model_dir) != str(first.model_dir):
            raise ValueError(f"replica {index} serves {engine.model_dir}, replica 0 {first.model_dir}")
        if engine.processor.max_model_len != first.processor.max_model_len:
            raise ValueError(f"replica {index} has another max_model_len than replica 0")


def _max_token_chars(tokenizer) -> int:
    """The most input characters one token can cover: its vocabulary entry's length (byte-level
    entries spell one byte per character, and a character is at least a byte; SentencePiece spells a
    space as one character)."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # a tokenizer without a listable vocabulary: assume long tokens
        return 256
    return max((len(token) for token in vocab), default=256)
