"""ReplicaSet: the server's engine replicas (data parallel: N AsyncLLMs over the same model and
options, each stepping on its own engine thread) behind one front end.

A request goes to the replica the ``ReplicaRouter`` picks and is counted in flight there until its
stream is over (``RoutedStream``). What is per engine but must look like one server fans out to
every replica concurrently: adapter loads and unloads (a load that fails on some replicas only is
undone everywhere, so that every replica serves the same names; the error is raised once), the
adapter list (names served by every replica), draining and shutdown. With one replica this is a
thin pass-through: the same calls on the same AsyncLLM."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Sequence
from typing import Any

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.registry import AdapterRef
from loomlm.async_llm import AsyncLLM
from loomlm.engine.sampling_params import SamplingParams
from loomlm.lora import AdapterChoice, LoRARequest
from loomlm.prompts import Conversation, PromptInput
from loomlm.server.routed_stream import RoutedStream
from loomlm.server.router import DEFAULT_MAX_IMBALANCE, PREFIX_CHARS, ReplicaRouter

# Token-id prompts: the first ids stand for the prefix (~PREFIX_CHARS characters of text).
_PREFIX_TOKENS = 64


class ReplicaSet:
    def __init__(
        self,
        llms: Sequence[AsyncLLM],
        *,
        routing: str = "affinity",
        max_imbalance: int = DEFAULT_MAX_IMBALANCE,
    ) -> None:
        if not llms:
            raise ValueError("a ReplicaSet needs at least one AsyncLLM")
        self.llms: tuple[AsyncLLM, ...] = tuple(llms)
        slots = [_max_loras(llm) for llm in self.llms]
        self.router = ReplicaRouter(len(self.llms), policy=routing, adapter_slots=slots,
                                    max_imbalance=max_imbalance)  # fmt: skip

    def __len__(self) -> int:
        return len(self.llms)

    @property
    def primary(self) -> AsyncLLM:
        """Replica 0: its configuration (model, limits, tokenizer) is every replica's."""
        return self.llms[0]

    @property
    def is_running(self) -> bool:
        """Every replica admits requests."""
        return all(llm.is_running for llm in self.llms)

    @property
    def is_draining(self) -> bool:
        return any(llm.is_draining for llm in self.llms)

    # -- requests -------------------------------------------------------------------------------
    async def submit(
        self,
        prompt: PromptInput,
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        adapter: AdapterChoice = None,
    ) -> RoutedStream:
        """``AsyncLLM.submit`` on the routed replica (its errors raised as they are)."""
        adapter_name = _adapter_name(adapter)
        replica = self.router.acquire(adapter_name, _prompt_prefix(prompt))
        llm = self.llms[replica]
        return await self._routed(replica, llm.submit(prompt, sampling_params, request_id=request_id,
                                                      adapter=adapter))  # fmt: skip

    async def submit_chat(
        self,
        messages: Conversation,
        sampling_params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        adapter: AdapterChoice = None,
        **options: Any,
    ) -> RoutedStream:
        """``AsyncLLM.submit_chat`` on the routed replica; ``options`` as there (tools, ...)."""
        adapter_name = _adapter_name(adapter)
        replica = self.router.acquire(adapter_name, _chat_prefix(messages))
        llm = self.llms[replica]
        return await self._routed(
            replica,
            llm.submit_chat(messages, sampling_params, request_id=request_id, adapter=adapter, **options),
        )

    async def _routed(self, replica: int, submitted: Awaitable[Any]) -> RoutedStream:
        release = functools.partial(self.router.release, replica)
        try:
            stream = await submitted
        except BaseException:  # refused (bad request, full queue) or cancelled: never in flight
            release()
            raise
        return RoutedStream(stream, replica, release)

    # -- adapters -------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: str) -> AdapterRef:
        """Load ``name`` on every replica. If some replicas fail, ``name`` is unloaded from all of
        them (a replaced adapter is then gone: retry the load) and the first error raised."""
        results = await _on_all(llm.load_adapter(name, path) for llm in self.llms)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) < len(results):  # new weights somewhere: where the old ones sat means nothing
            self.router.forget_adapter(name)
        if not errors:
            return results[0]
        if len(errors) < len(results):
            await _on_all(llm.unload_adapter(name) for llm in self.llms)
        raise errors[0]

    async def unload_adapter(self, name: str) -> None:
        """Unload ``name`` from every replica; AdapterError only if no replica had it."""
        results = await _on_all(llm.unload_adapter(name) for llm in self.llms)
        self.router.forget_adapter(name)
        errors = [r for r in results if isinstance(r, BaseException)]
        other = [e for e in errors if not isinstance(e, AdapterError)]
        if other:
            raise other[0]
        if errors and len(errors) == len(results):
            raise errors[0]

    async def list_adapters(self) -> list[AdapterRef]:
        """The adapters every replica serves (replica 0's references)."""
        lists = await asyncio.gather(*(llm.list_adapters() for llm in self.llms))
        everywhere = set.intersection(*({ref.name for ref in refs} for refs in lists))
        return [ref for ref in lists[0] if ref.name in everywhere]

    # -- state and lifecycle --------------------------------------------------------------------
    async def stats(self) -> list[dict[str, Any]]:
        """Each replica's ``AsyncLLM.stats()``, in replica order."""
        return list(await asyncio.gather(*(llm.stats() for llm in self.llms)))

    def registries(self) -> list[Any]:
        """Each replica's Prometheus registry (None where an engine keeps none)."""
        return [_registry(llm) for llm in self.llms]

    def stop_admitting(self) -> None:
        for llm in self.llms:
            llm.stop_admitting()

    async def shutdown(self, drain_timeout: float = 0.0) -> None:
        """Drain every replica at once (admission stops on all of them first), then stop them; the
        first error is raised after all have stopped."""
        self.stop_admitting()
        results = await _on_all(llm.shutdown(drain_timeout) for llm in self.llms)
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _on_all(calls: Any) -> list[Any]:
    """Every call's result or exception, run concurrently (each replica's on its own thread)."""
    return list(await asyncio.gather(*calls, return_exceptions=True))


def _adapter_name(adapter: AdapterChoice) -> str | None:
    return adapter.lora_name if isinstance(adapter, LoRARequest) else adapter


def _prompt_prefix(prompt: PromptInput) -> str:
    if isinstance(prompt, str):
        return prompt[:PREFIX_CHARS]
    return ",".join(str(token) for token in list(prompt[:_PREFIX_TOKENS]))


def _chat_prefix(messages: Conversation) -> str:
    """The conversation's first messages as text, up to PREFIX_CHARS: a long system prompt or
    document decides alone; a short one with its first user message (too little to be worth
    keeping together, and so the requests spread)."""
    parts: list[str] = []
    size = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        text = f"{message.get('role', '') if isinstance(message, dict) else ''}\x00{content!s}\x00"
        parts.append(text)
        size += len(text)
        if size >= PREFIX_CHARS:
            break
    return "".join(parts)[:PREFIX_CHARS]


def _max_loras(llm: AsyncLLM) -> int:
    adapters = getattr(llm.engine, "adapters", None)
    return getattr(adapters, "max_loras", 1) if adapters is not None else 1


def _registry(llm: AsyncLLM) -> Any:
    """The engine's Prometheus registry, wherever this engine version keeps it."""
    engine = llm.engine
    registry = getattr(engine, "metrics_registry", None)
    if registry is None:
        registry = getattr(getattr(engine, "metrics", None), "registry", None)
    return registry
