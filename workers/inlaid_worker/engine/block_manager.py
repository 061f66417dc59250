"""KV cache block ids: a free list, reference counts and (optionally) the prefix cache's hash maps. No torch;
the model runner owns the memory.

A sequence's block table is a plain list of block ids owned by the sequence; this class only hands ids out
and takes them back. Invariant: every block id is either free (ref count 0) or referenced by at least one
block table (ref count = number of tables holding it).

With `enable_caching`, a block whose KV is fully computed can be registered under its content hash
(prefix_cache.py). A registered block keeps its hash after its last reference is dropped: it is then
*evictable*, counted as free, and handed out again only when no never-cached free block is left, least
recently freed first (its hash is dropped then). A block that is referenced is never evicted, so a block
shared by several tables is never overwritten. Sequences share only full, immutable blocks (matched at
admission); a sequence writes only into blocks it allocated itself, so no copy-on-write is needed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from inlaid_worker.engine.prefix_cache import PrefixCacheStats


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = False) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_caching = enable_caching
        self._ref_counts = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))  # free blocks that hold no cached KV
        self._evictable: OrderedDict[int, None] = OrderedDict()  # free cached blocks, least recently freed first
        self._hash_of: dict[int, bytes] = {}  # block -> hash (registered blocks, in use or evictable)
        self._block_of: dict[bytes, int] = {}  # hash -> block
        self.generation = 0  # base-weights generation; part of every chain's root
        self.queried_tokens = 0
        self.hit_tokens = 0
        self.evictions = 0

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation may take: never-cached free blocks plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return (num_tokens + self.block_size - 1) // self.block_size

    def num_missing(self, block_table: list[int], num_tokens: int) -> int:
        """Blocks to add to `block_table` so that it holds `num_tokens` tokens."""
        return max(0, self.blocks_for(num_tokens) - len(block_table))

    def can_allocate(self, block_table: list[int], num_tokens: int) -> bool:
        return self.num_missing(block_table, num_tokens) <= self.num_free_blocks

    def allocate(self, block_table: list[int], num_tokens: int) -> None:
        """Grows `block_table` in place to hold `num_tokens` tokens."""
        missing = self.num_missing(block_table, num_tokens)
        if missing > self.num_free_blocks:
            raise RuntimeError(f"need {missing} KV blocks, {self.num_free_blocks} free")
        for _ in range(missing):
            if self._free:
                block_id = self._free.popleft()
            else:  # evict the least recently freed cached block
                block_id, _ = self._evictable.popitem(last=False)
                del self._block_of[self._hash_of.pop(block_id)]
                self.evictions += 1
            self._ref_counts[block_id] = 1
            block_table.append(block_id)

    def may_append(self, block_table: list[int], num_tokens: int) -> bool:
        """Decode: makes room for the sequence to reach `num_tokens`; False if no block is free."""
        if not self.can_allocate(block_table, num_tokens):
            return False
        self.allocate(block_table, num_tokens)
        return True

    def share(self, block_table: list[int]) -> list[int]:
        """A second table referencing the same blocks (e.g. a forked sequence or a shared prefix)."""
        for block_id in block_table:
            if self._ref_counts[block_id] <= 0:
                raise RuntimeError(f"block {block_id} is free and cannot be shared")
            self._ref_counts[block_id] += 1
        return list(block_table)

    def free(self, block_table: list[int]) -> None:
        """Drops the table's references (last block first, so recently used blocks are reused last and a
        cached chain is evicted from its tail, keeping its head matchable longest)."""
        for block_id in reversed(block_table):
            count = self._ref_counts[block_id]
            if count <= 0:
                raise RuntimeError(f"block {block_id} freed twice")
            self._ref_counts[block_id] = count - 1
            if count == 1:
                if block_id in self._hash_of:
                    self._evictable[block_id] = None
                else:
                    self._free.append(block_id)
        block_table.clear()

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    # ---- prefix cache ------------------------------------------------------------------------------------
    def match(self, hashes: Sequence[bytes]) -> list[int]:
        """The cached blocks of the longest prefix of `hashes` (a chain) found in the cache; no side effects."""
        blocks: list[int] = []
        if not self.enable_caching:
            return blocks
        for h in hashes:
            block_id = self._block_of.get(h)
            if block_id is None:
                break
            blocks.append(block_id)
        return blocks

    def num_taken_from_free(self, blocks: Sequence[int]) -> int:
        """How many of `blocks` (a match) are evictable, i.e. leave the free pool when acquired."""
        return sum(1 for b in blocks if self._ref_counts[b] == 0)

    def acquire(self, block_table: list[int], blocks: Sequence[int]) -> None:
        """Appends matched cached blocks to an empty `block_table`, taking a reference on each."""
        if block_table:
            raise RuntimeError("cached blocks go at the start of an empty block table")
        for block_id in blocks:
            if block_id not in self._hash_of:
                raise RuntimeError(f"block {block_id} is not cached")
            if self._ref_counts[block_id] == 0:
                del self._evictable[block_id]
            self._ref_counts[block_id] += 1
            block_table.append(block_id)

    def register(self, block_id: int, block_hash: bytes) -> bool:
        """Caches a referenced block whose KV is fully computed. False (and nothing changes) if the block is
        already cached or another block holds this hash (two sequences computed the same block at once: the
        later one stays private and goes back to the plain free list when freed)."""
        if not self.enable_caching or self._ref_counts[block_id] <= 0:
            return False
        if block_id in self._hash_of or block_hash in self._block_of:
            return False
        self._hash_of[block_id] = block_hash
        self._block_of[block_hash] = block_id
        return True

    def is_cached(self, block_id: int) -> bool:
        return block_id in self._hash_of

    def reset_cache(self) -> None:
        """Forgets every cached block and bumps the generation (the base weights changed). Referenced blocks
        stay with their tables and are freed normally; evictable ones become plain free blocks."""
        self.generation += 1
        self._free.extend(self._evictable)
        self._evictable.clear()
        self._hash_of.clear()
        self._block_of.clear()

    def record_lookup(self, queried_tokens: int, hit_tokens: int) -> None:
        self.queried_tokens += queried_tokens
        self.hit_tokens += hit_tokens

    def cache_stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(
            self.enable_caching, self.queried_tokens, self.hit_tokens, len(self._hash_of), len(self._evictable),
            self.evictions, self.generation,
        )
