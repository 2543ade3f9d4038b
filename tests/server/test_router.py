"""ReplicaRouter on its own (no engine): adapter affinity, prefix locality, the least-loaded fallback,
the balance guard, round robin, bounded memory and its argument checks."""

from __future__ import annotations

import pytest

from loomlm.server.router import PREFIX_CHARS, ReplicaRouter, prefix_key


def test_the_least_loaded_replica_takes_a_request_without_affinity():
    router = ReplicaRouter(3)
    assert [router.acquire() for _ in range(3)] == [0, 1, 2]  # all idle: the one that took fewest
    router.release(1)
    assert router.acquire() == 1  # the only one with nothing in flight
    router.release(0)
    router.release(2)
    assert router.in_flight == (0, 1, 0)
    assert router.acquire() == 0  # ties on load: fewest taken so far (0 and 2 took one each), then index
    assert router.acquire() == 2


def test_sequential_requests_alternate():
    router = ReplicaRouter(2)
    seen = []
    for _ in range(6):
        replica = router.acquire(prefix=None)
        seen.append(replica)
        router.release(replica)
    assert seen == [0, 1, 0, 1, 0, 1] and router.routed == (3, 3)


def test_an_adapter_sticks_to_its_replica():
    router = ReplicaRouter(2, adapter_slots=2)
    sql = router.acquire("sql")
    chat = router.acquire("chat")
    assert sql != chat  # the second adapter goes to the idle replica
    for _ in range(3):  # however loaded the replicas are (within the bound)
        assert router.acquire("sql") == sql
        assert router.acquire("chat") == chat
    assert router.reasons(sql)["adapter"] == 3 and router.resident_adapters(sql) == ["sql"]
    # Even after everything finished, each adapter returns where it is resident.
    for replica in (0, 1):
        while router.in_flight[replica]:
            router.release(replica)
    assert router.acquire("chat") == chat and router.acquire("sql") == sql


def test_an_adapter_evicted_from_the_resident_set_still_goes_home():
    router = ReplicaRouter(2, adapter_slots=1)
    a = router.acquire("a")
    router.release(a)
    b = router.acquire("b")  # the other replica (fewest taken)
    router.release(b)
    assert router.acquire("c") == a  # a's replica now holds c (one slot)
    router.release(a)
    assert router.resident_adapters(a) == ["c"]
    assert router.acquire("a") == a  # not resident anywhere: its home


def test_a_hot_adapter_resident_on_two_replicas_goes_to_the_less_loaded():
    router = ReplicaRouter(2, adapter_slots=2, max_imbalance=1)
    for _ in range(3):
        router.acquire("hot")  # 0, 0, then 2 - 0 > 1: the guard sends the third to replica 1
    assert router.in_flight == (2, 1) and router.reasons(1)["balance"] == 1
    assert router.resident_adapters(0) == router.resident_adapters(1) == ["hot"]
    assert router.acquire("hot") == 1  # resident on both: the less loaded of the two
    assert router.reasons(1)["adapter"] == 1


def test_the_balance_guard_bounds_what_affinity_piles_on_one_replica():
    router = ReplicaRouter(2, max_imbalance=3)
    picks = [router.acquire("hot") for _ in range(20)]
    assert max(router.in_flight) - min(router.in_flight) <= 4  # the bound, plus the request deciding
    assert picks[:4] == [0, 0, 0, 0] and picks[4] == 1  # affinity until the gap would pass 3
    assert router.reasons(0)["balance"] + router.reasons(1)["balance"] > 0


def test_zero_imbalance_keeps_affinity_only_among_equally_loaded_replicas():
    router = ReplicaRouter(2, max_imbalance=0)
    assert [router.acquire("a") for _ in range(4)] == [0, 1, 0, 1]


def test_prompts_with_the_same_start_go_to_the_same_replica():
    router = ReplicaRouter(2)
    document = "A long shared system prompt. " * 20  # longer than the prefix that is hashed
    first = router.acquire(prefix=document + "Question one?")
    other = router.acquire(prefix="Something else entirely.")
    assert other != first
    assert router.acquire(prefix=document + "Question two?") == first
    assert router.reasons(first)["prefix"] == 1
    # The same text under an adapter is another prefix (the KV cache keys blocks by adapter).
    assert prefix_key("sql", document) != prefix_key(None, document)
    assert prefix_key(None, document + "x") == prefix_key(None, document[:PREFIX_CHARS])


def test_among_replicas_holding_an_adapter_its_prefix_decides():
    router = ReplicaRouter(2, adapter_slots=2, max_imbalance=1)
    text = "The same prompt text for every request, long enough to matter. " * 5
    assert [router.acquire("hot", text) for _ in range(3)] == [0, 0, 1]  # the guard spread it
    router.release(0)
    router.release(0)
    assert router.in_flight == (0, 1)
    # Resident on both; replica 0 is less loaded, but replica 1 served this prefix last.
    assert router.acquire("hot", text) == 1
    assert router.acquire("hot", "another prompt") == 0  # no prefix: the less loaded holder


def test_round_robin_ignores_adapters_prefixes_and_load():
    router = ReplicaRouter(3, policy="round_robin")
    picks = [router.acquire("sql", "same text") for _ in range(7)]
    assert picks == [0, 1, 2, 0, 1, 2, 0]
    assert router.reasons(0) == {"adapter": 0, "prefix": 0, "least_loaded": 0, "balance": 0, "round_robin": 3}
    assert router.num_remembered == (0, 0)


def test_memory_is_bounded():
    router = ReplicaRouter(2, adapter_slots=2, max_prefixes=16, max_adapter_homes=8)
    for i in range(1000):
        replica = router.acquire(f"adapter-{i}", f"prompt number {i}")
        router.release(replica)
    assert router.num_remembered == (8, 16)
    assert all(len(router.resident_adapters(r)) <= 2 for r in (0, 1))
    assert router.in_flight == (0, 0) and sum(router.routed) == 1000


def test_forgetting_an_adapter_drops_its_affinity():
    router = ReplicaRouter(2)
    a = router.acquire("a")
    router.acquire("b")
    router.forget_adapter("a")
    assert router.resident_adapters(a) == [] and router.num_remembered[0] == 1
    assert router.acquire("a") in (0, 1)  # decided by load alone now
    assert router.reasons(0)["adapter"] + router.reasons(1)["adapter"] == 0


def test_release_without_a_request_in_flight_is_an_error():
    router = ReplicaRouter(2)
    with pytest.raises(ValueError, match="no request in flight"):
        router.release(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_replicas": 0}, "num_replicas"),
        ({"num_replicas": 2, "policy": "random"}, "routing policy"),
        ({"num_replicas": 2, "adapter_slots": [1]}, "adapter_slots"),
        ({"num_replicas": 2, "adapter_slots": 0}, "adapter_slots"),
        ({"num_replicas": 2, "max_imbalance": -1}, "max_imbalance"),
        ({"num_replicas": 2, "max_prefixes": 0}, "max_prefixes"),
        ({"num_replicas": True}, "num_replicas"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReplicaRouter(**kwargs)
