"""ReplicaRouter: which data-parallel engine replica takes a request. Plain bookkeeping, no engine
and no I/O: the server's ``ReplicaSet`` asks it for a replica, starts the request there, and gives
the slot back (``release``) when the request is over, whichever way it ends.

Policy ``affinity`` (the default) decides in this order:

1. **Adapter affinity.** A request for adapter X goes to a replica X is resident on (routed there
   within its last ``max_loras`` distinct adapters, so most likely still in a device slot), else to
   X's home (the replica X last went to). Loading an adapter into a slot costs a copy of its
   weights, and a replica cycling through fewer adapters evicts less: keeping each adapter on one
   replica partitions the adapters between replicas.
2. **Prefix locality.** A request whose prompt starts like a recent one (the same first
   ``PREFIX_CHARS`` characters, under the same adapter: KV blocks are keyed by adapter) goes where
   that one went, where the prefix cache most likely still holds its KV blocks.
3. **Least loaded.** Otherwise the replica with the fewest requests in flight (ties: the one that
   took fewest requests so far, then the lowest index, so sequential requests alternate).

A balance guard overrides 1 and 2 when the preferred replica has more than ``max_imbalance``
requests in flight beyond the least-loaded one: one hot adapter or prompt cannot pile everything
onto one replica. Policy ``round_robin`` ignores all of it (the benchmarks' baseline).

Memory is bounded: per replica at most ``max_loras`` resident names, at most ``max_adapter_homes``
adapter homes and ``max_prefixes`` prefix hashes (least recently used dropped first)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence

ROUTING_POLICIES = ("affinity", "round_robin")
REASONS = ("adapter", "prefix", "least_loaded", "balance", "round_robin")
# How many requests in flight the preferred replica may have beyond the least-loaded one before
# affinity gives way. A continuously batched replica's step time grows slowly with a few more
# sequences, while an adapter slot miss or a re-computed prefix costs about a prefill; past a handful
# of extra requests the queueing on the hot replica (and the idle one next to it) costs more.
DEFAULT_MAX_IMBALANCE = 4
# The prompt characters that make a prefix key: ~64 tokens, four KV blocks of 16, enough to tell
# shared system prompts and documents apart, short enough to hash for every request.
PREFIX_CHARS = 256
DEFAULT_MAX_PREFIXES = 4096
DEFAULT_MAX_ADAPTER_HOMES = 1024


class ReplicaRouter:
    """Routing state of ``num_replicas`` replicas; ``adapter_slots``: each replica's ``max_loras``
    (one number for all). Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        num_replicas: int,
        *,
        policy: str = "affinity",
        adapter_slots: int | Sequence[int] = 4,
        max_imbalance: int = DEFAULT_MAX_IMBALANCE,
        max_prefixes: int = DEFAULT_MAX_PREFIXES,
        max_adapter_homes: int = DEFAULT_MAX_ADAPTER_HOMES,
    ) -> None:
        _check_int(num_replicas, 1, "num_replicas")
        if policy not in ROUTING_POLICIES:
            raise ValueError(f"routing policy must be one of {ROUTING_POLICIES}, got {policy!r}")
        slots = [adapter_slots] * num_replicas if isinstance(adapter_slots, int) else list(adapter_slots)
        if len(slots) != num_replicas:
            raise ValueError(f"adapter_slots has {len(slots)} entries for {num_replicas} replicas")
        for value in slots:
            _check_int(value, 1, "adapter_slots")
        _check_int(max_imbalance, 0, "max_imbalance")
        _check_int(max_prefixes, 1, "max_prefixes")
        _check_int(max_adapter_homes, 1, "max_adapter_homes")
        self.num_replicas = num_replicas
        self.policy = policy
        self.max_imbalance = max_imbalance
        self._slots = slots
        self._max_prefixes = max_prefixes
        self._max_adapter_homes = max_adapter_homes
        self._in_flight = [0] * num_replicas
        self._routed = [0] * num_replicas
        self._reasons = [dict.fromkeys(REASONS, 0) for _ in range(num_replicas)]
        self._resident: list[OrderedDict[str, None]] = [OrderedDict() for _ in range(num_replicas)]
        self._adapter_home: OrderedDict[str, int] = OrderedDict()
        self._prefix_home: OrderedDict[int, int] = OrderedDict()
        self._next_round_robin = 0

    # -- decisions ------------------------------------------------------------------------------
    def acquire(self, adapter: str | None = None, prefix: str | None = None) -> int:
        """The replica for a request (``prefix``: its prompt text, or text standing for it), counted
        in flight there until ``release``."""
        if self.policy == "round_robin":
            replica, reason = self._next_round_robin, "round_robin"
            self._next_round_robin = (replica + 1) % self.num_replicas
        else:
            key = None if prefix is None else prefix_key(adapter, prefix)
            replica, reason = self._choose(adapter, key)
            self._remember(replica, adapter, key)
        self._in_flight[replica] += 1
        self._routed[replica] += 1
        self._reasons[replica][reason] += 1
        return replica

    def release(self, replica: int) -> None:
        """A request routed to ``replica`` is over (finished, aborted or failed)."""
        if self._in_flight[replica] <= 0:
            raise ValueError(f"replica {replica} has no request in flight to release")
        self._in_flight[replica] -= 1

    def forget_adapter(self, name: str) -> None:
        """``name`` was unloaded or loaded again: where its old weights sit no longer matters."""
        for resident in self._resident:
            resident.pop(name, None)
        self._adapter_home.pop(name, None)

    def _choose(self, adapter: str | None, key: int | None) -> tuple[int, str]:
        least = min(range(self.num_replicas), key=self._load_order)
        preferred, reason = self._preferred(adapter, key)
        if preferred is None:
            return least, "least_loaded"
        if self._in_flight[preferred] - self._in_flight[least] > self.max_imbalance:
            return least, "balance"
        return preferred, reason

    def _preferred(self, adapter: str | None, key: int | None) -> tuple[int | None, str]:
        prefix_home = None if key is None else self._prefix_home.get(key)
        if adapter is not None:
            holders = [r for r in range(self.num_replicas) if adapter in self._resident[r]]
            if prefix_home in holders:
                return prefix_home, "adapter"
            if holders:
                return min(holders, key=self._load_order), "adapter"
            home = self._adapter_home.get(adapter)
            if home is not None:
                return home, "adapter"
        if prefix_home is not None:
            return prefix_home, "prefix"
        return None, "least_loaded"

    def _load_order(self, replica: int) -> tuple[int, int, int]:
        return self._in_flight[replica], self._routed[replica], replica

    def _remember(self, replica: int, adapter: str | None, key: int | None) -> None:
        if adapter is not None:
            _touch(self._resident[replica], adapter, None, self._slots[replica])
            _touch(self._adapter_home, adapter, replica, self._max_adapter_homes)
        if key is not None:
            _touch(self._prefix_home, key, replica, self._max_prefixes)

    # -- reading --------------------------------------------------------------------------------
    @property
    def in_flight(self) -> tuple[int, ...]:
        return tuple(self._in_flight)

    @property
    def routed(self) -> tuple[int, ...]:
        """Requests each replica has taken so far."""
        return tuple(self._routed)

    def reasons(self, replica: int) -> dict[str, int]:
        """How many of the requests routed to ``replica`` went there for each reason."""
        return dict(self._reasons[replica])

    def resident_adapters(self, replica: int) -> list[str]:
        """The adapters the router believes ``replica`` holds, least recently routed first."""
        return list(self._resident[replica])

    @property
    def num_remembered(self) -> tuple[int, int]:
        """(adapter homes, prefix hashes) remembered: both bounded."""
        return len(self._adapter_home), len(self._prefix_home)


def prefix_key(adapter: str | None, prefix: str) -> int:
    """A 64-bit hash of the adapter and the first PREFIX_CHARS characters: requests that share it
    can share KV blocks (the cache keys blocks by adapter too). Stable across processes."""
    text = f"{adapter or ''}\x00{prefix[:PREFIX_CHARS]}"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _touch(lru: OrderedDict, key: Hashable, value: object, capacity: int) -> None:
    lru[key] = value
    lru.move_to_end(key)
    while len(lru) > capacity:
        lru.popitem(last=False)


def _check_int(value: object, minimum: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
