"""KVCacheManager: each request's block table on top of the BlockPool, with prefix-cache lookup."""

from __future__ import annotations

from loomlm.engine.block_pool import BlockPool, KVBlock, hash_block_tokens
from loomlm.engine.request import Request


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks, enable_caching=enable_prefix_caching)
        self._blocks: dict[str, list[KVBlock]] = {}
        # How many leading blocks of each request are already indexed in the prefix cache.
        self._num_indexed: dict[str, int] = {}
        # Lifetime prefix-cache counts in tokens, as vLLM counts them (metrics read them): per
        # admission, the request's known tokens (queried) and those served from the cache (hits).
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self._blocks.get(request_id, ())]

    def max_tokens_in_pool(self) -> int:
        return self.pool.num_blocks * self.block_size

    def hash_full_blocks(self, request: Request) -> None:
        """Extend ``request.block_hashes`` over every full block of known tokens (a command: the
        scheduler calls it before looking up the prefix cache)."""
        size = self.block_size
        hashes = request.block_hashes
        tokens = request.all_token_ids
        while (len(hashes) + 1) * size <= len(tokens):
            start = len(hashes) * size
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block_tokens(parent, tokens[start : start + size], request.extra_hash_keys))

    def find_cached_prefix(self, request: Request) -> list[KVBlock]:
        """Longest run of cached blocks matching the request's hashed prefix (``hash_full_blocks``).
        A pure query. At least one token is always left to compute, since the step that computes it
        produces the logits."""
        if not self.enable_prefix_caching:
            return []
        max_blocks = (request.num_tokens - 1) // self.block_size
        hits: list[KVBlock] = []
        tokens = request.all_token_ids
        for i, block_hash in enumerate(request.block_hashes[:max_blocks]):
            start = i * self.block_size
            block = self.pool.lookup(block_hash, tokens[start : start + self.block_size])
            if block is None:
                break
            hits.append(block)
        return hits

    def num_blocks_needed(self, request: Request, num_new_tokens: int, cached: list[KVBlock]) -> int:
        """Free-pool blocks that ``allocate`` would consume, counting cached hits that sit free."""
        held = len(self._blocks.get(request.request_id, ())) + len(cached)
        total = _cdiv(
            request.num_computed_tokens + len(cached) * self.block_size + num_new_tokens, self.block_size
        )
        return max(0, total - held) + sum(1 for b in cached if b.ref_count == 0)

    def allocate(
        self, request: Request, num_new_tokens: int, cached: list[KVBlock] | None = None
    ) -> list[int] | None:
        """Reserve blocks so ``num_new_tokens`` more tokens fit after the request's computed tokens
        and the ``cached`` prefix hits; None if the pool cannot provide them (nothing is changed
        then). Returns the block table. The request's counters are the caller's: a cached prefix
        moves ``num_computed_tokens`` only when the scheduler says so."""
        cached = cached or []
        if self.num_blocks_needed(request, num_new_tokens, cached) > self.pool.num_free_blocks:
            return None
        blocks = self._blocks.setdefault(request.request_id, [])
        if not blocks and self.enable_prefix_caching:
            # A request's first allocation (new, or recomputed after preemption) is where its prefix
            # lookup takes effect: counted here, once per admission, never for a lookup that failed
            # to get blocks and is retried next step.
            self.prefix_cache_queries += request.num_tokens
            self.prefix_cache_hits += len(cached) * self.block_size
        if cached:
            self.pool.touch(cached)
            blocks.extend(cached)
        num_tokens_after = request.num_computed_tokens + len(cached) * self.block_size + num_new_tokens
        missing = _cdiv(num_tokens_after, self.block_size) - len(blocks)
        if missing > 0:
            blocks.extend(self.pool.allocate(missing))
        self._cache_full_blocks(request, blocks, num_tokens_after)
        return [b.block_id for b in blocks]

    def _cache_full_blocks(self, request: Request, blocks: list[KVBlock], num_tokens: int) -> None:
        # Blocks are indexed as soon as they are scheduled full: the step writes every layer's KV
        # before any attention reads it, so a hit in the same step is still correct.
        if not self.enable_prefix_caching:
            return
        self.hash_full_blocks(request)
        size = self.block_size
        tokens = request.all_token_ids
        first = self._num_indexed.get(request.request_id, 0)
        last = min(num_tokens // size, len(request.block_hashes))
        for i in range(first, last):
            self.pool.cache_block(blocks[i], request.block_hashes[i], tokens[i * size : (i + 1) * size])
        self._num_indexed[request.request_id] = max(first, last)

    def free(self, request: Request) -> None:
        blocks = self._blocks.pop(request.request_id, [])
        self._num_indexed.pop(request.request_id, None)
        self.pool.free(reversed(blocks))
