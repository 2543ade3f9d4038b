"""ReplicaSet and RoutedStream over stand-in AsyncLLMs (no model): a request's router slot is given back
however its stream ends; adapter loads, unloads and listings fan out to every replica and agree;
draining reaches every replica."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import pytest

from loomlm.adapters.errors import AdapterError
from loomlm.server.replicas import ReplicaSet


class FakeStream:
    """A RequestStream stand-in: ``outputs`` items, the last one finished."""

    def __init__(self, request_id: str, outputs: int = 2) -> None:
        self.request_id = request_id
        self._left = outputs
        self.finished = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.finished:
            raise StopAsyncIteration
        self._left -= 1
        self.finished = self._left == 0
        return self._left

    async def result(self):
        while not self.finished:
            await self.__anext__()
        return "final"

    def cancel(self) -> None:
        self.finished = True


class FakeLLM:
    """The AsyncLLM surface ReplicaSet uses; ``refuse``: adapter names whose load fails here."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.engine = SimpleNamespace(adapters=SimpleNamespace(max_loras=2))
        self.adapters: dict[str, str] = {}
        self.refuse = refuse
        self.is_running, self.is_draining, self.drained_with = True, False, None
        self.submitted: list[str] = []

    async def submit(self, prompt, params=None, *, request_id=None, adapter=None):
        if prompt == "bad":
            raise ValueError("bad prompt")
        self.submitted.append(prompt)
        return FakeStream(request_id or prompt)

    async def submit_chat(self, messages, params=None, *, request_id=None, adapter=None, **options):
        return await self.submit(messages[-1]["content"], params, request_id=request_id, adapter=adapter)

    async def load_adapter(self, name, path):
        if name in self.refuse:
            raise AdapterError(f"cannot load {name}")
        self.adapters[name] = path
        return SimpleNamespace(name=name, path=path)

    async def unload_adapter(self, name):
        if self.adapters.pop(name, None) is None:
            raise AdapterError(f"unknown adapter {name!r}")

    async def list_adapters(self):
        return [SimpleNamespace(name=n, path=p) for n, p in sorted(self.adapters.items())]

    def stop_admitting(self) -> None:
        self.is_running, self.is_draining = False, True

    async def shutdown(self, drain_timeout: float = 0.0) -> None:
        self.stop_admitting()
        self.drained_with = drain_timeout


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_every_way_a_stream_ends_gives_its_slot_back_once():
    replicas = ReplicaSet([FakeLLM(), FakeLLM()])
    router = replicas.router

    async def main():
        read = await replicas.submit("read to the end")
        assert router.in_flight == (1, 0)
        assert [item async for item in read] == [1, 0] and router.in_flight == (0, 0)
        result = await replicas.submit("result")
        assert await result.result() == "final" and router.in_flight == (0, 0)
        cancelled = await replicas.submit("cancelled")
        async with cancelled:
            await anext(cancelled)
            assert sum(router.in_flight) == 1
        cancelled.cancel()  # again: nothing more to give back
        assert router.in_flight == (0, 0)
        with pytest.raises(ValueError, match="bad prompt"):
            await replicas.submit("bad")  # refused: never in flight
        assert router.in_flight == (0, 0)
        await replicas.submit("dropped")  # neither read nor closed: given back when collected
        gc.collect()
        assert router.in_flight == (0, 0)

    run(main())
    assert sum(router.routed) == 5


def test_chat_and_completions_are_routed_by_adapter():
    llms = [FakeLLM(), FakeLLM()]
    replicas = ReplicaSet(llms)

    async def main():
        for i in range(3):
            await replicas.submit_chat([{"role": "user", "content": f"chat {i}"}], adapter="sql")
            await replicas.submit(f"plain {i}", adapter="chat")

    run(main())
    sql = next(i for i, llm in enumerate(llms) if "chat 0" in llm.submitted)
    assert all(f"chat {i}" in llms[sql].submitted for i in range(3))
    assert all(f"plain {i}" in llms[1 - sql].submitted for i in range(3))


def test_loads_reach_every_replica_and_a_partial_failure_is_undone_everywhere():
    llms = [FakeLLM(), FakeLLM(refuse=("flaky",)), FakeLLM()]
    replicas = ReplicaSet(llms)
    ref = run(replicas.load_adapter("sql", "/a/sql"))
    assert ref.name == "sql" and all(llm.adapters == {"sql": "/a/sql"} for llm in llms)
    with pytest.raises(AdapterError, match="cannot load flaky"):
        run(replicas.load_adapter("flaky", "/a/flaky"))
    assert all("flaky" not in llm.adapters for llm in llms)  # the replicas still agree
    assert [r.name for r in run(replicas.list_adapters())] == ["sql"]


def test_the_listing_has_only_adapters_every_replica_serves():
    llms = [FakeLLM(), FakeLLM()]
    llms[0].adapters = {"both": "/b", "only0": "/o"}
    llms[1].adapters = {"both": "/b"}
    assert [r.name for r in run(ReplicaSet(llms).list_adapters())] == ["both"]


def test_unload_fails_only_if_no_replica_had_the_adapter():
    llms = [FakeLLM(), FakeLLM()]
    replicas = ReplicaSet(llms)
    llms[0].adapters = {"half": "/h"}
    run(replicas.unload_adapter("half"))
    assert llms[0].adapters == {}
    with pytest.raises(AdapterError, match="unknown adapter"):
        run(replicas.unload_adapter("half"))


def test_shutdown_drains_every_replica():
    llms = [FakeLLM(), FakeLLM()]
    replicas = ReplicaSet(llms)
    assert replicas.is_running and not replicas.is_draining
    llms[1].stop_admitting()
    assert not replicas.is_running and replicas.is_draining  # one replica down: not serving
    run(replicas.shutdown(drain_timeout=2.5))
    assert [llm.drained_with for llm in llms] == [2.5, 2.5]


def test_an_empty_replica_set_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        ReplicaSet([])
