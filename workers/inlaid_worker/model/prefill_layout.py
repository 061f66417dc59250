"""Buckets and the static int32 step buffer of a prefill or mixed step (model.prefill_graphs); pure numpy.

A step of T new tokens over S sequences runs in the bucket (TB, SB): the smallest TB >= T and SB >= S of
T_BUCKETS x S_BUCKETS. Its buffer holds, in this order (PrefillDims gives the offsets):
    tokens [3, TB]        token id, position, KV slot (padding rows: 0, 0, -1 = no KV write)
    logits rows [SB]      the row of each sequence's logits (padding: 0; its logits are never read back)
    tiles [4, NT]         attention query tiles (kernels.paged_prefill): sequence, first row, rows, first
                          position; NT = TB / TILE_M + SB bounds the tiles of any layout; padding tiles have 0 rows
    LoRA [TB + 3 * NB]    SGMV row blocks of LORA_BLOCK_M rows (kernels.lora_batch.LoraBatch): the rows with an
                          adapter grouped by adapter, then each block's adapter, first index and rows (padding
                          blocks: 0 rows); NB = TB / LORA_BLOCK_M + SB bounds the blocks when each sequence has
                          one adapter
    block table [SB, W]
Padding rows belong to no tile and no LoRA block: they write no KV, attend nothing (zeros) and are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inlaid_worker.kernels.paged_prefill import TILE_M
from inlaid_worker.model.step_input import StepInput

T_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
S_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256)
LORA_BLOCK_M = 16


def prefill_bucket(num_tokens: int, num_seqs: int) -> tuple[int, int] | None:
    """(TB, SB) for a step of num_tokens rows over num_seqs sequences, or None when it is over the largest."""
    tb = next((b for b in T_BUCKETS if b >= num_tokens), None)
    sb = next((b for b in S_BUCKETS if b >= num_seqs), None)
    return None if tb is None or sb is None else (tb, sb)


@dataclass(frozen=True)
class PrefillDims:
    tokens: int  # TB
    seqs: int  # SB
    width: int  # W, block-table columns

    @property
    def tiles(self) -> int:
        return -(-self.tokens // TILE_M) + self.seqs

    @property
    def blocks(self) -> int:
        return -(-self.tokens // LORA_BLOCK_M) + self.seqs

    def offsets(self) -> dict[str, tuple[int, int]]:
        """name -> (start, length) in the buffer."""
        sizes = (("tokens", 3 * self.tokens), ("logits", self.seqs), ("tiles", 4 * self.tiles),
                 ("lora", self.tokens + 3 * self.blocks), ("tables", self.seqs * self.width))  # fmt: skip
        out, at = {}, 0
        for name, n in sizes:
            out[name] = (at, n)
            at += n
        return out

    @property
    def size(self) -> int:
        start, n = self.offsets()["tables"]
        return start + n


def plan_tiles(query_start_loc: np.ndarray, context_lens: np.ndarray, tile_m: int = TILE_M) -> np.ndarray:
    """int64 [4, n]: each sequence's chunk cut into tiles of tile_m rows (sequence, first row, rows, first
    position); sequences with no new rows get none."""
    qlen = np.diff(query_start_loc)
    per = -(-qlen // tile_m)
    seq = np.repeat(np.arange(len(qlen)), per)
    first_tile = np.cumsum(per) - per
    k = np.arange(len(seq)) - np.repeat(first_tile, per)  # tile index within its chunk
    rows = np.minimum(tile_m, qlen[seq] - k * tile_m)
    pos0 = context_lens[seq] - qlen[seq] + k * tile_m
    return np.stack((seq, query_start_loc[:-1][seq] + k * tile_m, rows, pos0))


def plan_lora_blocks(adapter_ids: np.ndarray, block_m: int = LORA_BLOCK_M) -> tuple[np.ndarray, np.ndarray]:
    """(rows [n] grouped by adapter, blocks int64 [3, nb]: adapter, first index into rows, rows in block)."""
    rows = np.flatnonzero(adapter_ids >= 0)
    if rows.size == 0:  # base-only step (np.unique below costs ~20 us)
        return rows, np.zeros((3, 0), dtype=np.int64)
    rows = rows[np.argsort(adapter_ids[rows], kind="stable")]
    ids = adapter_ids[rows]  # sorted: each adapter's run starts where the id changes (np.unique's result, cheaper)
    first = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    adapters, counts = ids[first], np.diff(np.append(first, ids.size))
    per = -(-counts // block_m)
    k = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    starts = np.repeat(first, per) + k * block_m
    lens = np.minimum(block_m, np.repeat(counts, per) - k * block_m)
    return rows, np.stack((np.repeat(adapters, per), starts, lens))


def fits(dims: PrefillDims, step: StepInput) -> bool:
    """Whether the step fits the bucket (rows, sequences, block-table width, tiles and LoRA blocks)."""
    if step.num_tokens > dims.tokens or step.num_seqs > dims.seqs or step.block_tables.shape[1] > dims.width:
        return False
    qlen = np.diff(step.query_start_loc.numpy())
    if int((-(-qlen // TILE_M)).sum()) > dims.tiles:
        return False
    ids = step.adapter_ids.numpy()
    ids = ids[ids >= 0]
    if ids.size == 0:
        return True
    _, counts = np.unique(ids, return_counts=True)
    return int((-(-counts // LORA_BLOCK_M)).sum()) <= dims.blocks


def stage_prefill(buf: np.ndarray, dims: PrefillDims, step: StepInput) -> None:
    """Fill the int32 buffer (dims.size) from a step that fits (see the module docstring)."""
    t, s, w = step.num_tokens, step.num_seqs, step.block_tables.shape[1]
    off = dims.offsets()
    tb = dims.tokens

    def part(name: str) -> np.ndarray:
        start, n = off[name]
        return buf[start : start + n]

    tok = part("tokens").reshape(3, tb)
    tok[0, :t] = step.token_ids.numpy()
    tok[1, :t] = step.positions.numpy()
    tok[2, :t] = step.slot_mapping.numpy()
    tok[:2, t:] = 0
    tok[2, t:] = -1
    logits = part("logits")
    logits[:s] = step.logits_indices.numpy()
    logits[s:] = 0
    plan = plan_tiles(step.query_start_loc.numpy(), step.context_lens.numpy())
    tiles = part("tiles").reshape(4, dims.tiles)
    tiles[:, : plan.shape[1]] = plan
    tiles[:, plan.shape[1] :] = 0
    rows, blocks = plan_lora_blocks(step.adapter_ids.numpy())
    lora = part("lora")
    lora[: rows.size] = rows
    lora[rows.size : tb] = 0
    blk = lora[tb:].reshape(3, dims.blocks)
    blk[:, : blocks.shape[1]] = blocks
    blk[:, blocks.shape[1] :] = 0
    tables = part("tables").reshape(dims.seqs, dims.width)
    tables[:s, :w] = step.block_tables.numpy()
