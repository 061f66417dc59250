"""Split-K workspaces sized by M's tuning bucket (quant_common.bucket_sizes: workspace_rows), not M: every decode
batch bucket inside a tuning bucket (24 / 32, 48 / 64, 80 / 96 / 128, 160 .. 256) asks quant_common.workspace and
quant_tcw.slot_workspace for the same partials and counters, so the first decode graph of the tuning bucket makes the
buffer the later ones reuse (the buffers grow by replacement and decode graphs keep every captured one alive).
Host-side launch logic, CPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from gptq_weight import gptq_weight as _weight
from kernel_buffers import fresh_workspaces

K, N = 1280, 256  # 10 K tiles, 2 tcw / 4 tcs column tiles
# (M values in ascending order, the bucket): decode batch buckets first, then the ends of the tuning bucket
RUNS = (((17, 24, 32), 32), ((33, 48, 64), 64), ((65, 80, 96, 128), 128), ((129, 160, 192, 224, 256), 256))

Args = Callable[[torch.Tensor, object, torch.Tensor], tuple]


def _kinds() -> dict[str, tuple[Args, int | dict[int, int], int, int]]:
    """kind -> (its launch arguments at x, w, y; fp32 planes a row asks for (the splits for slots, else 1; by bucket
    where the plan decides); block_m; counters a row block asks for: its column tiles at N = 256, times the consumer
    warpgroups where each counts its own, 4 a tcw tile)."""
    from inlaid_worker.kernels.quant_common import split_launch
    from inlaid_worker.kernels.quant_hgemvr import swiglu_launch
    from inlaid_worker.kernels.quant_matmul import tile_args
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_tcg import tcg_args
    from inlaid_worker.kernels.quant_tcl import tcl_args
    from inlaid_worker.kernels.quant_tcs import tcs_args
    from inlaid_worker.kernels.quant_tcsx import WIDE_REGS, tcsx_args
    from inlaid_worker.kernels.quant_tcsxk import tcsxk_args
    from inlaid_worker.kernels.quant_tcv import tcv_args
    from inlaid_worker.kernels.quant_tcw import tcw_args

    def swiglu(x: torch.Tensor, w: object, y: torch.Tensor) -> tuple:
        grid, args, _ = split_launch(x, w, y, 16, 64, 128, 1)  # split 1: the swiglu path's workspace alone
        return swiglu_launch(x, w, grid, args, 16)[1]

    return {  # block_m 16 / 32 / 64: M's row blocks differ inside a bucket, so the counters would too
        "tcw (slots; the H200's 7B down at 256)": (lambda x, w, y: tcw_args(x, w, 64, 2, 4, y)[1], 2, 64, 4 * 2),
        "tcwx": (lambda x, w, y: tcw_args(x, w, 64, 2, 4, y, slots=False)[1], 1, 64, 4 * 2),
        "tcs slots": (lambda x, w, y: tcs_args(x, w, 16, 5, 4, 2, y, slots=True)[1], 5, 16, 2 * 2),
        "tcs": (lambda x, w, y: tcs_args(x, w, 16, 5, 4, 2, y)[1], 1, 16, 2 * 2),
        "tcsx": (lambda x, w, y: tcsx_args(x, w, 32, 4, 4, 2, y)[1], 1, 32, 2 * 2),
        "tcsxk": (lambda x, w, y: tcsxk_args(x, w, 128, 7, 4, 2, y, WIDE_REGS)[1], 1, 128, 2 * 2),
        "tcsxks (7 programs on 20 / 40 units)": (lambda x, w, y: tcsxk_args(x, w, 128, 7, 4, 2, y, WIDE_REGS,
                                                                            slots=True)[1],
                                                 {32: 5, 64: 5, 128: 5, 256: 3}, 128, 2 * 2),  # fmt: skip
        "tcl": (lambda x, w, y: tcl_args(x, w, 64, 64, 4, 4, 3, 0, y)[1], 1, 64, 4),
        "tcg": (lambda x, w, y: tcg_args(x, w, 16, 64, 4, 4, 2, False, 1, y)[1], 1, 16, 4),
        "tcv": (lambda x, w, y: tcv_args(x, w, 16, 64, 2, 4, 2, 1, y)[1], 1, 16, 4),
        "split_launch (gemv / hgemv / hgemvr / tc)": (lambda x, w, y: split_launch(x, w, y, 16, 64, 128, 4)[1], 1, 16,
                                                      4),  # fmt: skip
        "tile (quant_matmul v1/v2)": (lambda x, w, y: tile_args(x, w, QMMConfig(32, 64, 128, 4, 4, 2), y)[1], 1, 32, 4),
        "hgemvr swiglu (tile pairs)": (swiglu, 1, 16, 2),
    }


def test_workspace_rows_is_the_bucket_up_to_512() -> None:
    from inlaid_worker.kernels.quant_common import workspace_rows

    assert [workspace_rows(m) for m in (1, 3, 24, 129, 256, 300, 512, 600)] == [1, 4, 32, 256, 256, 512, 512, 600]


@pytest.mark.parametrize("kind", list(_kinds()))
def test_every_m_of_a_bucket_reuses_the_first_ones_workspace(kind: str) -> None:
    """At each M of a bucket in ascending order (decode graphs are captured as batches grow) the launch gets the
    buffers the first M got (sized by M, 32 after 24 would replace them); the first M asks for exactly the bucket's
    planes x rows of partials and one counter set per row block of the bucket (quant_common.bucket_sizes)."""
    args_of, planes, block_m, col_tiles = _kinds()[kind]
    w, _ = _weight(K, N, False, False)
    cpu = torch.device("cpu")
    for ms, bucket in RUNS:
        with fresh_workspaces(cpu):
            got = []
            for m in ms:
                y = torch.empty(m, N, dtype=torch.float16)
                args = args_of(torch.zeros(m, K, dtype=torch.float16), w, y)
                at = next(i for i, a in enumerate(args) if a is y)  # every kind passes y, ws, cnt in a row
                got.append((args[at + 1], args[at + 2]))
            ws, cnt = got[0]
            assert all(g[0] is ws and g[1] is cnt for g in got), (kind, bucket, [g[0].numel() for g in got])
            rows_planes = planes if isinstance(planes, int) else planes[bucket]
            want = (rows_planes * bucket * N, col_tiles * -(-bucket // block_m))
            assert (ws.numel(), cnt.numel()) == want, (kind, bucket, ws.numel(), cnt.numel())


def test_bucket_sizes_above_512_are_m_itself_and_slots_use_their_own_table() -> None:
    """Above bucket 512 the rows are M's own; bucket_workspace hands the request to its allocator: the read-and-clear
    workspace or quant_tcw.slot_workspace (never the other's buffers)."""
    from inlaid_worker.kernels import quant_common, quant_tcw
    from inlaid_worker.kernels.quant_common import bucket_sizes, bucket_workspace

    assert bucket_sizes(600, 256, 4, 64) == (600 * 256, 4 * 10)
    assert bucket_sizes(300, 256, 4, 64, planes=3) == (3 * 512 * 256, 4 * 8)
    assert bucket_sizes(1, 256, 2, 16) == (256, 2)
    cpu = torch.device("cpu")
    with fresh_workspaces(cpu):
        ws, cnt = bucket_workspace(cpu, 24, 256, 4, 16)
        assert all(a is b for a, b in zip(quant_common._WORKSPACES[cpu], (ws, cnt), strict=True))
        assert cpu not in quant_tcw._SLOT_WS
        slots, slot_cnt = bucket_workspace(cpu, 24, 256, 4, 16, planes=2, alloc=quant_tcw.slot_workspace)
        assert all(a is b for a, b in zip(quant_tcw._SLOT_WS[cpu], (slots, slot_cnt), strict=True))
        assert (slots.numel(), slot_cnt.numel()) == (2 * 32 * 256, 8) and slots is not ws
        assert all(a is b for a, b in zip(quant_common._WORKSPACES[cpu], (ws, cnt), strict=True))
        assert (ws.numel(), cnt.numel()) == (32 * 256, 8)
