"""AdapterRegistry: names and load generations, device slots with pinning and LRU eviction,
validate-before-evict, the CPU LRU with re-reads, and deferred unload."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from loomlm.adapters.errors import AdapterError
from loomlm.adapters.layers import LoRAModelWeights
from loomlm.adapters.registry import AdapterRegistry


def make_registry(spec, *, max_loras=2, max_cpu_loras=4, max_lora_rank=16):
    weights = LoRAModelWeights(spec, num_slots=max_loras, max_rank=max_lora_rank, max_num_tokens=8)
    return AdapterRegistry(
        spec, weights, max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_lora_rank=max_lora_rank
    )


def slot_holds(registry, slot, adapter_dir, spec):
    """Whether the slot holds the adapter's scaled B matrices (the CPU layout keeps B transposed)."""
    from loomlm.adapters.peft_loader import load_peft_adapter

    adapter = load_peft_adapter("check", adapter_dir, spec, 16)
    for (layer, module), (_, b) in adapter.weights.items():
        for group in registry.weights.cpu_groups.values():
            if module in group.modules:
                views = group.views[slot][layer]
                offset = group.offsets[group.modules.index(module)]
                parts = [] if views is None else [p for p in views.parts if p.out_offset == offset]
                if len(parts) != 1 or not torch.equal(parts[0].b_t, b.t()):
                    return False
    return True


def slot_rank(registry, slot, layer=0, group="qkv_proj") -> int:
    views = registry.weights.cpu_groups[group].views[slot][layer]
    return 0 if views is None else views.parts[0].rank


@pytest.fixture
def copies(tiny_lora_adapters, tmp_path):
    """Private copies of the three adapters (tests edit or delete them)."""
    return {name: shutil.copytree(path, tmp_path / name) for name, path in tiny_lora_adapters.items()}


def test_load_gives_generations_and_lists_by_name(spec, copies):
    registry = make_registry(spec)
    first = registry.load("b", copies["all8"])
    second = registry.load("a", copies["re16"])
    assert second.adapter_id > first.adapter_id
    assert [r.name for r in registry.list()] == ["a", "b"]
    assert registry.get("b") == first
    reloaded = registry.load("b", copies["all8"])
    assert reloaded.adapter_id != first.adapter_id and reloaded.content_hash == first.content_hash
    with pytest.raises(AdapterError, match="unknown adapter 'zzz'; loaded adapters: a, b"):
        registry.get("zzz")


def test_a_bad_load_changes_nothing(spec, copies):
    registry = make_registry(spec, max_lora_rank=8)
    registry.load("ok", copies["all8"])
    with pytest.raises(AdapterError, match="max_lora_rank=8"):
        registry.load("ok", copies["re16"])
    assert registry.get("ok").path == str(copies["all8"])


def test_slots_pin_evict_least_recently_used_and_refuse_when_all_pinned(spec, copies):
    registry = make_registry(spec, max_loras=2)
    refs = {name: registry.load(name, copies[name]) for name in ("all8", "rs4", "re16")}
    slot_a = registry.acquire_slot(refs["all8"])
    slot_b = registry.acquire_slot(refs["rs4"])
    assert {slot_a, slot_b} == {0, 1}
    assert registry.acquire_slot(refs["re16"]) is None  # both pinned: the request waits
    assert registry.acquire_slot(refs["all8"]) == slot_a  # already resident: shares the slot
    registry.release_slot(slot_a)
    assert registry.acquire_slot(refs["re16"]) is None  # all8 still pinned once
    registry.release_slot(slot_a)
    registry.release_slot(slot_b)
    # Both unpinned; rs4 was used least recently (all8 was acquired again after it): it goes.
    slot_c = registry.acquire_slot(refs["re16"])
    assert slot_c == slot_b
    assert registry.slot_of(refs["rs4"]) is None and registry.slot_of(refs["all8"]) == slot_a
    assert slot_holds(registry, slot_c, copies["re16"], spec)
    registry.release_slot(slot_c)
    with pytest.raises(ValueError, match="not pinned"):
        registry.release_slot(slot_b)


def test_adapter_is_read_before_anything_is_evicted(spec, copies):
    registry = make_registry(spec, max_loras=1, max_cpu_loras=1)
    first = registry.load("first", copies["all8"])
    second = registry.load("second", copies["re16"])  # pushes "first" out of the CPU cache
    assert registry.cpu_cached_names() == ["second"]
    slot = registry.acquire_slot(second)
    registry.release_slot(slot)
    shutil.rmtree(copies["all8"])
    with pytest.raises(AdapterError, match=r"no adapter_config\.json"):
        registry.acquire_slot(first)
    assert registry.slot_of(second) == slot  # the resident adapter was not evicted


def test_cpu_lru_rereads_from_disk_and_refuses_changed_files(spec, copies):
    registry = make_registry(spec, max_loras=1, max_cpu_loras=1)
    first = registry.load("first", copies["all8"])
    registry.load("second", copies["rs4"])
    slot = registry.acquire_slot(first)  # re-read from its path
    assert slot_holds(registry, slot, copies["all8"], spec)
    assert registry.cpu_cached_names() == ["first"]
    registry.release_slot(slot)
    third = registry.load("third", copies["re16"])
    weights_file = str(copies["all8"] / "adapter_model.safetensors")
    tensors = load_file(weights_file)
    save_file({key: value + 1 for key, value in tensors.items()}, weights_file)  # same shapes, new values
    registry.acquire_slot(third)  # evicts "first" from the slot
    registry.release_slot(0)
    with pytest.raises(AdapterError, match="changed since it was loaded"):
        registry.acquire_slot(first)


def test_unload_is_deferred_while_a_request_pins_the_slot(spec, copies):
    registry = make_registry(spec, max_loras=2)
    ref = registry.load("a", copies["all8"])
    slot = registry.acquire_slot(ref)
    registry.unload("a")
    assert registry.list() == []
    with pytest.raises(AdapterError, match="unknown adapter 'a'"):
        registry.get("a")
    assert registry.slot_of(ref) == slot  # the running request keeps its weights
    assert slot_rank(registry, slot) == 8
    registry.release_slot(slot)
    assert registry.slot_of(ref) is None  # freed once no request pins it
    assert slot_rank(registry, slot) == 0
    # A request submitted before the unload can still get the adapter (re-read from its path).
    again = registry.acquire_slot(ref)
    assert again is not None and slot_holds(registry, again, copies["all8"], spec)


def test_unloading_an_idle_adapter_frees_its_slot_at_once(spec, copies):
    registry = make_registry(spec, max_loras=1)
    ref = registry.load("a", copies["all8"])
    registry.release_slot(registry.acquire_slot(ref))
    registry.unload("a")
    assert registry.slot_of(ref) is None and registry.cpu_cached_names() == []


def test_registry_sizes_are_checked(spec):
    weights = LoRAModelWeights(spec, num_slots=2, max_rank=8, max_num_tokens=4)
    with pytest.raises(ValueError, match="max_cpu_loras"):
        AdapterRegistry(spec, weights, max_loras=2, max_cpu_loras=1, max_lora_rank=8)
    with pytest.raises(ValueError, match="sized for"):
        AdapterRegistry(spec, weights, max_loras=3, max_cpu_loras=4, max_lora_rank=8)
