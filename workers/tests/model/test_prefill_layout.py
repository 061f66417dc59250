"""Buckets, attention tiles, LoRA blocks and the static step buffer of prefill CUDA graphs
(model.prefill_layout): pure numpy, checked on hand-made and random step layouts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from factories import make_step
from inlaid_worker.kernels.paged_prefill import TILE_M
from inlaid_worker.model.prefill_layout import (
    LORA_BLOCK_M,
    PrefillDims,
    fits,
    plan_lora_blocks,
    plan_tiles,
    prefill_bucket,
    stage_prefill,
)

BS = 4


def test_buckets() -> None:
    assert prefill_bucket(160, 33) == (192, 48)
    assert prefill_bucket(16, 1) == (16, 1)
    assert prefill_bucket(17, 2) == (32, 2)
    assert prefill_bucket(2049, 1) is None and prefill_bucket(64, 257) is None


def test_tiles_of_a_hand_made_layout() -> None:
    # seq 0: one decode row; seq 1: 70 rows after 30 cached; seq 2: no rows; seq 3: 8 rows from position 0
    qsl = np.array([0, 1, 71, 71, 79])
    ctx = np.array([5, 100, 9, 8])
    tiles = plan_tiles(qsl, ctx, 32)
    assert tiles.T.tolist() == [[0, 0, 1, 4], [1, 1, 32, 30], [1, 33, 32, 62], [1, 65, 6, 94], [3, 71, 8, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_tiles_cover_every_row_once_at_its_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    qlen = rng.integers(0, 90, size=rng.integers(1, 12))
    cached = rng.integers(0, 50, size=qlen.size)
    qsl = np.concatenate(([0], np.cumsum(qlen)))
    ctx = cached + qlen
    tiles = plan_tiles(qsl, ctx)
    seen: dict[int, tuple[int, int]] = {}
    for seq, row0, n, p0 in tiles.T:
        assert 1 <= n <= TILE_M
        for i in range(n):
            assert row0 + i not in seen
            seen[int(row0 + i)] = (int(seq), int(p0 + i))
    want = {int(qsl[s] + i): (s, int(cached[s] + i)) for s in range(qlen.size) for i in range(qlen[s])}
    assert seen == want
    assert tiles.shape[1] <= PrefillDims(int(qsl[-1]), qlen.size, 1).tiles


def test_lora_blocks_group_rows_by_adapter_in_blocks_of_block_m() -> None:
    ids = np.array([2] * 20 + [-1] * 3 + [0] * 2 + [2] * 13)
    rows, blocks = plan_lora_blocks(ids, 16)
    assert rows.tolist() == [20 + 3, 24, *range(20), *range(25, 38)]
    assert blocks.T.tolist() == [[0, 0, 2], [2, 2, 16], [2, 18, 16], [2, 34, 1]]
    none_rows, none_blocks = plan_lora_blocks(np.array([-1, -1]))
    assert none_rows.size == 0 and none_blocks.shape == (3, 0)


def test_stage_fills_rows_tiles_blocks_and_pads() -> None:
    step = make_step([([5], 3, [4, 1], 1), ([6, 7, 8], 2, [2, 3], -1), ([9, 10], 0, [8], 1)], BS)
    dims = PrefillDims(16, 4, 5)
    buf = np.full(dims.size, 77, dtype=np.int32)
    stage_prefill(buf, dims, step)
    off = dims.offsets()
    tok = buf[off["tokens"][0] :][: 3 * 16].reshape(3, 16)
    assert tok[0, :6].tolist() == [5, 6, 7, 8, 9, 10] and tok[1, :6].tolist() == [3, 2, 3, 4, 0, 1]
    assert tok[2, :6].tolist() == [4 * BS + 3, 2 * BS + 2, 2 * BS + 3, 3 * BS + 0, 8 * BS, 8 * BS + 1]
    assert (tok[:2, 6:] == 0).all() and (tok[2, 6:] == -1).all()  # padding rows: no KV write
    s0 = off["logits"][0]
    assert buf[s0 : s0 + 4].tolist() == [0, 3, 5, 0]
    t0 = off["tiles"][0]
    tiles = buf[t0 : t0 + 4 * dims.tiles].reshape(4, dims.tiles)
    assert tiles[:, :3].T.tolist() == [[0, 0, 1, 3], [1, 1, 3, 2], [2, 4, 2, 0]]
    assert (tiles[2, 3:] == 0).all()  # padding tiles have no rows
    l0 = off["lora"][0]
    lora = buf[l0 : l0 + 16 + 3 * dims.blocks]
    assert lora[:3].tolist() == [0, 4, 5] and (lora[3:16] == 0).all()
    blk = lora[16:].reshape(3, dims.blocks)
    assert blk[:, 0].tolist() == [1, 0, 3] and (blk[2, 1:] == 0).all()
    tab = buf[off["tables"][0] :].reshape(4, 5)
    assert tab[:3, :2].tolist() == [[4, 1], [2, 3], [8, 0]]


def test_fits_checks_rows_width_tiles_and_blocks() -> None:
    chunks = [(list(range(3, 3 + 40)), 0, list(range(12)), 0)]
    step = make_step(chunks, BS)
    assert fits(PrefillDims(64, 1, 12), step)
    assert not fits(PrefillDims(32, 1, 12), step)  # rows
    assert not fits(PrefillDims(64, 1, 11), step)  # block table width
    many = make_step([([3, 4], 0, [i], i % 3) for i in range(8)], BS)  # 8 chunks, 3 adapters
    assert fits(PrefillDims(16, 8, 1), many)
    assert LORA_BLOCK_M == 16 and PrefillDims(16, 8, 1).blocks == 9
    per_row = dataclasses.replace(many, adapter_ids=torch.arange(16))  # 16 adapters over 8 sequences
    assert not fits(PrefillDims(16, 8, 1), per_row)  # 16 one-row blocks > the 9 the bucket holds
    assert fits(PrefillDims(16, 16, 1), per_row)


def test_which_steps_the_padded_path_takes(tmp_path) -> None:
    from factories import make_tiny_llama
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.prefill_graphs import PrefillGraphs

    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, 64, BS, c.num_kv_heads, c.head_dim)
    g = PrefillGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, 12, None, capture=False, max_graphs=1)
    prefill = make_step([([5, 6, 7], 0, [0], -1), ([8], 4, [1, 2], -1)], BS)
    assert g.can_run(prefill)
    assert not g.can_run(make_step([([5], 3, [0], -1), ([6], 4, [1, 2], -1)], BS))  # pure decode: decode graphs
    assert not g.can_run(make_step([([5, 6], 0, list(range(13)), -1)], BS))  # block table wider than 12
    assert not g.can_run(make_step([(list(range(3, 2100)), 0, list(range(525)), -1)], BS))  # over 2048 rows
    g.max_graphs = 0  # the cap: a bucket not yet live falls back to the eager step
    assert not g.can_run(prefill)
