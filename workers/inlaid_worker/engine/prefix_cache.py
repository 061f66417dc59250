"""Automatic prefix caching: content hashes of full KV blocks, chained from a root that names everything
else the KV depends on. Pure Python, no torch (the block manager keeps the hash <-> block maps).

A block's hash covers its parent block's hash and its own token ids, so equal hashes mean equal token
prefixes up to that block's end (blake2b, 128 bits: no practical collisions, none that a client can craft).
The chain's root covers what else changes K and V:

- the adapter: a LoRA on any projection changes the hidden states that later layers' K/V are computed from,
  so every adapter gets its own chains. The key is the adapter's load generation (unique per load), never its
  name: an adapter unloaded and loaded again under the same name with other weights never matches.
- the base weights' generation: bumped (and the cache flushed) whenever a layer of the base is swapped
  (dynamic task addition re-quantizes the base layer by layer while serving).

Positions are implied: block i of a chain holds positions [i * block_size, (i + 1) * block_size).
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

HASH_BYTES = 16
_VERSION = b"inlaid-prefix-v1"


def root_hash(adapter_key: int, base_generation: int, block_size: int) -> bytes:
    """The parent of a chain's first block (adapter_key 0 = the base model)."""
    h = hashlib.blake2b(_VERSION, digest_size=HASH_BYTES)
    h.update(struct.pack("<qqq", adapter_key, base_generation, block_size))
    return h.digest()


def block_hash(parent: bytes, token_ids: Sequence[int]) -> bytes:
    h = hashlib.blake2b(parent, digest_size=HASH_BYTES)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


def extend_chain(
    hashes: list[bytes], root: bytes, token_ids: Sequence[int], block_size: int, num_blocks: int
) -> list[bytes]:
    """Grows `hashes` (the chain of the first len(hashes) full blocks of token_ids) in place to `num_blocks`."""
    if num_blocks * block_size > len(token_ids):
        raise ValueError(f"{len(token_ids)} tokens do not fill {num_blocks} blocks of {block_size}")
    parent = hashes[-1] if hashes else root
    for i in range(len(hashes), num_blocks):
        parent = block_hash(parent, token_ids[i * block_size : (i + 1) * block_size])
        hashes.append(parent)
    return hashes


def chain(root: bytes, token_ids: Sequence[int], block_size: int) -> list[bytes]:
    """The hashes of every full block of token_ids."""
    return extend_chain([], root, token_ids, block_size, len(token_ids) // block_size)


def max_cached_blocks(num_tokens: int, block_size: int) -> int:
    """Full blocks a sequence of `num_tokens` may take from the cache: never its last token (the step that
    computes it gives the logits of the next one), so at most (num_tokens - 1) // block_size."""
    return max(0, num_tokens - 1) // block_size


@dataclass(frozen=True)
class PrefixCacheStats:
    enabled: bool
    queried_tokens: int  # tokens of sequences admitted with a cache lookup (re-admissions after preemption too)
    hit_tokens: int  # of those, tokens whose KV came from the cache
    cached_blocks: int  # blocks registered in the cache (in use or evictable)
    evictable_blocks: int  # cached blocks no sequence holds (counted as free; evicted LRU when needed)
    evictions: int
    generation: int  # base-weights generation (bumped at every base swap; the cache is flushed then)

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0
