"""KV cache block ids: a free list and reference counts. No torch; the model runner owns the memory.

A sequence's block table is a plain list of block ids owned by the sequence; this class only hands ids out
and takes them back. Invariant: every block id is either on the free list (ref count 0) or referenced by at
least one block table (ref count = number of tables holding it).
"""

from __future__ import annotations

from collections import deque


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref_counts = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return (num_tokens + self.block_size - 1) // self.block_size

    def num_missing(self, block_table: list[int], num_tokens: int) -> int:
        """Blocks to add to `block_table` so that it holds `num_tokens` tokens."""
        return max(0, self.blocks_for(num_tokens) - len(block_table))

    def can_allocate(self, block_table: list[int], num_tokens: int) -> bool:
        return self.num_missing(block_table, num_tokens) <= len(self._free)

    def allocate(self, block_table: list[int], num_tokens: int) -> None:
        """Grows `block_table` in place to hold `num_tokens` tokens."""
        missing = self.num_missing(block_table, num_tokens)
        if missing > len(self._free):
            raise RuntimeError(f"need {missing} KV blocks, {len(self._free)} free")
        for _ in range(missing):
            block_id = self._free.popleft()
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
        """Drops the table's references (last block first, so recently used blocks are reused last)."""
        for block_id in reversed(block_table):
            count = self._ref_counts[block_id]
            if count <= 0:
                raise RuntimeError(f"block {block_id} freed twice")
            self._ref_counts[block_id] = count - 1
            if count == 1:
                self._free.append(block_id)
        block_table.clear()

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]
