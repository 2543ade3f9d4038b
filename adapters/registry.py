"""AdapterRegistry: adapter names, a CPU LRU of loaded adapters and the device slots.

Every ``load`` gets a fresh ``adapter_id`` (a load generation): an `AdapterRef` (name, id, content
hash, path) is what a request carries, so a request keeps the weights it was submitted with even if
the name is reloaded or unloaded meanwhile. Loaded adapters stay in a CPU LRU (``max_cpu_loras``);
one evicted from it is re-read from its path when needed again (and refused if the files changed).
``max_loras`` device slots hold adapters for the forward; a running request pins its slot, and
only unpinned slots are evicted (least recently used first). A new adapter is read and validated
before anything is evicted, so a bad adapter never costs another tenant its slot.

``unload(name)`` removes the name at once (new requests cannot use it). Requests already submitted
with it finish with it; its slot and CPU copy are freed as soon as no request pins them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.peft_loader import LoRAAdapter, load_peft_adapter
from loomlm.adapters.spec import LoRABaseSpec

logger = logging.getLogger(__name__)


class LoRASlots(Protocol):
    """The device slots the registry fills: `LoRAModelWeights` in the engine process, or the
    executor's proxy that writes every tensor-parallel worker's shard of them."""

    num_slots: int
    max_rank: int

    def write_slot(self, slot: int, adapter: LoRAAdapter) -> None: ...

    def clear_slot(self, slot: int) -> None: ...


@dataclass(slots=True, frozen=True)
class AdapterRef:
    """The identity a request carries: which load of which adapter."""

    name: str
    adapter_id: int
    content_hash: str
    path: str


class AdapterRegistry:
    def __init__(
        self,
        spec: LoRABaseSpec,
        weights: LoRASlots,
        *,
        max_loras: int,
        max_cpu_loras: int,
        max_lora_rank: int,
    ) -> None:
        if weights.num_slots != max_loras or weights.max_rank != max_lora_rank:
            raise ValueError("the LoRA weights must be sized for max_loras slots of max_lora_rank")
        if max_cpu_loras < max_loras:
            raise ValueError(f"max_cpu_loras ({max_cpu_loras}) must be >= max_loras ({max_loras})")
        self.spec = spec
        self.weights = weights
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self.max_lora_rank = max_lora_rank
        self._names: dict[str, AdapterRef] = {}
        self._retired: set[int] = set()  # ids whose name was unloaded or reloaded
        self._cpu: OrderedDict[int, LoRAAdapter] = OrderedDict()  # least recently used first
        self._next_id = 1
        self._slot_ids: list[int | None] = [None] * max_loras
        self._pins = [0] * max_loras
        self._slot_of: dict[int, int] = {}
        self._slot_lru: OrderedDict[int, None] = OrderedDict((slot, None) for slot in range(max_loras))
        # Lifetime counts for the engine's metrics: adapters read from disk by ``load``, and re-read
        # after eviction from the CPU cache (a high re-read rate says max_cpu_loras is too small).
        self.num_loads = 0
        self.num_rereads = 0
        self.num_slot_writes = 0  # adapters written into a device slot (a miss of the slot cache)

    # -- names ----------------------------------------------------------------------------------
    def load(self, name: str, path: str | Path) -> AdapterRef:
        """Read and validate the adapter at ``path`` under ``name`` (replacing an earlier load of
        that name for new requests). Raises AdapterError and changes nothing on a bad adapter."""
        if not isinstance(name, str) or not name:
            raise AdapterError(f"adapter name must be a non-empty string, got {name!r}")
        adapter = load_peft_adapter(name, path, self.spec, self.max_lora_rank)
        ref = AdapterRef(name, self._next_id, adapter.content_hash, adapter.path)
        self._next_id += 1
        previous = self._names.get(name)
        self._names[name] = ref
        if previous is not None:
            self._retire(previous.adapter_id)
        self._cache_cpu(ref.adapter_id, adapter)
        self.num_loads += 1
        logger.info("loaded adapter %r (id %d) from %s", name, ref.adapter_id, ref.path)
        return ref

    def unload(self, name: str) -> None:
        ref = self.get(name)
        del self._names[name]
        self._retire(ref.adapter_id)

    def get(self, name: str) -> AdapterRef:
        ref = self._names.get(name)
        if ref is None:
            known = ", ".join(sorted(self._names)) or "none"
            raise AdapterError(f"unknown adapter {name!r}; loaded adapters: {known}")
        return ref

    def list(self) -> list[AdapterRef]:
        return [self._names[name] for name in sorted(self._names)]

    def slot_of(self, ref: AdapterRef) -> int | None:
        return self._slot_of.get(ref.adapter_id)

    def num_active(self) -> int:
        """Adapters in a device slot pinned by at least one running request."""
        return sum(1 for pins in self._pins if pins)

    # -- device slots ---------------------------------------------------------------------------
    def slot_available(self, ref: AdapterRef) -> bool:
        """Whether ``acquire_slot`` would find a slot for ``ref`` now (it holds ``ref`` already, or
        an unpinned slot can be evicted). A pure query."""
        return ref.adapter_id in self._slot_of or self._evictable_slot() is not None

    def acquire_slot(self, ref: AdapterRef, adapter: LoRAAdapter | None = None) -> int | None:
        """Pin a slot holding ``ref``'s weights, writing them in if needed (``adapter``: its tensors
        already read with ``self.adapter(ref)``, else read here). None when every slot is pinned by
        running requests. AdapterError if the adapter can no longer be read; nothing is evicted then."""
        slot = self._slot_of.get(ref.adapter_id)
        if slot is None:
            slot = self._evictable_slot()
            if slot is None:
                return None
            if adapter is None:
                adapter = self.adapter(ref)
            old = self._slot_ids[slot]
            if old is not None:
                del self._slot_of[old]
                logger.info("evicted adapter id %d from slot %d for %r", old, slot, ref.name)
            self.weights.write_slot(slot, adapter)
            self.num_slot_writes += 1
            self._slot_ids[slot] = ref.adapter_id
            self._slot_of[ref.adapter_id] = slot
        self._pins[slot] += 1
        self._slot_lru.move_to_end(slot)
        return slot

    def release_slot(self, slot: int) -> None:
        if self._pins[slot] <= 0:
            raise ValueError(f"slot {slot} is not pinned")
        self._pins[slot] -= 1
        adapter_id = self._slot_ids[slot]
        if self._pins[slot] == 0 and adapter_id in self._retired:
            self._free_slot(slot)

    # -- CPU copies -----------------------------------------------------------------------------
    def adapter(self, ref: AdapterRef) -> LoRAAdapter:
        """The loaded tensors of ``ref``: from the CPU LRU, else re-read from its path."""
        adapter = self._cpu.get(ref.adapter_id)
        if adapter is not None:
            self._cpu.move_to_end(ref.adapter_id)
            return adapter
        logger.info("re-reading adapter %r from %s (not in the CPU cache)", ref.name, ref.path)
        adapter = load_peft_adapter(ref.name, ref.path, self.spec, self.max_lora_rank)
        if adapter.content_hash != ref.content_hash:
            raise AdapterError(
                f"adapter {ref.name!r}: the files in {ref.path} changed since it was loaded; load it again"
            )
        self.num_rereads += 1
        if ref.adapter_id not in self._retired:
            self._cache_cpu(ref.adapter_id, adapter)
        return adapter

    def cpu_cached_names(self) -> list[str]:
        return [adapter.name for adapter in self._cpu.values()]

    def _cache_cpu(self, adapter_id: int, adapter: LoRAAdapter) -> None:
        self._cpu[adapter_id] = adapter
        self._cpu.move_to_end(adapter_id)
        while len(self._cpu) > self.max_cpu_loras:
            evicted_id, evicted = self._cpu.popitem(last=False)
            logger.info("evicted adapter %r (id %d) from the CPU cache", evicted.name, evicted_id)

    def _retire(self, adapter_id: int) -> None:
        self._retired.add(adapter_id)
        self._cpu.pop(adapter_id, None)
        slot = self._slot_of.get(adapter_id)
        if slot is not None and self._pins[slot] == 0:
            self._free_slot(slot)

    def _free_slot(self, slot: int) -> None:
        adapter_id = self._slot_ids[slot]
        if adapter_id is not None:
            del self._slot_of[adapter_id]
        self._slot_ids[slot] = None
        self.weights.clear_slot(slot)
        self._slot_lru.move_to_end(slot, last=False)  # an empty slot is the first to reuse

    def _evictable_slot(self) -> int | None:
        for slot in self._slot_lru:  # least recently used first; empty slots sit in front
            if self._pins[slot] == 0:
                return slot
        return None
