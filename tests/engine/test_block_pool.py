"""BlockPool and KVCacheManager: ref counts, prefix-cache hits, LRU eviction, token checks."""

import pytest

from loomlm.engine.block_pool import BlockPool, hash_block_tokens
from loomlm.engine.kv_cache_manager import KVCacheManager
from loomlm.engine.request import Request
from loomlm.engine.sampling_params import SamplingParams


def make_request(request_id: str, tokens: list[int], extra: tuple = ()) -> Request:
    return Request(request_id, tokens, SamplingParams(max_tokens=4), extra_hash_keys=extra)


def test_allocate_and_free_track_ref_counts():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert [b.ref_count for b in blocks] == [1, 1, 1]
    assert pool.num_free_blocks == 1
    pool.touch(blocks[:1])
    pool.free(blocks)
    assert blocks[0].ref_count == 1 and pool.num_free_blocks == 3
    pool.free(blocks[:1])
    assert pool.num_free_blocks == 4
    with pytest.raises(RuntimeError, match="freed more often"):
        pool.free(blocks[:1])
    with pytest.raises(RuntimeError, match="cannot allocate 5"):
        pool.allocate(5)


def test_chained_hash_depends_on_prefix_and_extra_keys():
    a = hash_block_tokens(None, [1, 2])
    assert hash_block_tokens(a, [3, 4]) != hash_block_tokens(hash_block_tokens(None, [9, 9]), [3, 4])
    assert hash_block_tokens(None, [1, 2], ("adapter-1",)) != a
    assert hash_block_tokens(None, [1, 2]) == a


def test_lookup_checks_tokens_not_only_hash():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    pool.cache_block(block, b"h", [1, 2])
    assert pool.lookup(b"h", [1, 2]) is block
    assert pool.lookup(b"h", [1, 3]) is None  # a colliding hash never serves wrong KV


def test_freed_cached_blocks_are_evicted_least_recently_freed_first():
    pool = BlockPool(3)
    a, b, c = pool.allocate(3)
    for i, block in enumerate((a, b, c)):
        pool.cache_block(block, bytes([i]), [i])
    pool.free([b])
    pool.free([a])
    pool.free([c])
    (first,) = pool.allocate(1)
    assert first is b and pool.lookup(bytes([1]), [1]) is None  # evicted
    assert pool.lookup(bytes([0]), [0]) is a  # still cached while free
    pool.touch([a])  # a prefix hit takes it off the free queue
    (second,) = pool.allocate(1)
    assert second is c


def lookup(manager: KVCacheManager, request):
    """What the scheduler does before admitting a request: hash its full blocks, then look up."""
    manager.hash_full_blocks(request)
    return manager.find_cached_prefix(request)


def test_manager_reuses_prefix_blocks_across_requests():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    first = make_request("a", list(range(10)))
    table = manager.allocate(first, first.num_tokens)
    assert len(table) == 3 and first.num_computed_tokens == 0
    second = make_request("b", list(range(8)) + [99, 98, 97])
    hits = lookup(manager, second)
    assert [b.block_id for b in hits] == table[:2]  # two full shared blocks
    table_b = manager.allocate(second, second.num_tokens - 8, hits)
    assert table_b[:2] == table[:2] and table_b[2] != table[2]
    assert second.num_computed_tokens == 0  # the scheduler, not allocate, moves the counter
    assert [manager.pool.blocks[i].ref_count for i in table[:2]] == [2, 2]
    manager.free(first)
    manager.free(second)
    assert manager.num_free_blocks == 8


def test_prefix_hit_always_leaves_one_token_to_compute():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    first = make_request("a", list(range(8)))
    manager.allocate(first, 8)
    again = make_request("b", list(range(8)))
    assert len(lookup(manager, again)) == 1  # the last block is recomputed for logits


def test_extra_hash_keys_separate_cache_entries():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    manager.allocate(make_request("a", list(range(9)), extra=("lora-1",)), 9)
    assert lookup(manager, make_request("b", list(range(9)), extra=("lora-2",))) == []
    assert len(lookup(manager, make_request("c", list(range(9)), extra=("lora-1",)))) == 2


def test_allocate_refuses_without_side_effects_when_pool_is_short():
    manager = KVCacheManager(num_blocks=2, block_size=4)
    request = make_request("a", list(range(12)))
    assert manager.allocate(request, 12) is None
    assert manager.num_free_blocks == 2 and manager.block_ids("a") == []


def test_disabled_prefix_caching_never_hits():
    manager = KVCacheManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    manager.allocate(make_request("a", list(range(9))), 9)
    assert lookup(manager, make_request("b", list(range(9)))) == []


def test_prefix_lookup_is_a_pure_query():
    manager = KVCacheManager(num_blocks=8, block_size=4)
    manager.allocate(make_request("a", list(range(9))), 9)
    request = make_request("b", list(range(9)))
    assert manager.find_cached_prefix(request) == [] and request.block_hashes == []  # nothing hashed yet
    manager.hash_full_blocks(request)
    hashes = list(request.block_hashes)
    assert len(manager.find_cached_prefix(request)) == 2
    assert request.block_hashes == hashes and request.num_computed_tokens == 0
