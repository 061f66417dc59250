"""Split-K workspaces sized by M's tuning bucket (quant_common.workspace_rows), not M: every decode batch bucket inside
a tuning bucket (24 / 32, 48 / 64, 80 / 96 / 128, 160 .. 256) asks quant_common.workspace and quant_tcw.slot_workspace
for the same partials and counters, so the first decode graph of the tuning bucket makes the buffer the later ones
reuse (the buffers grow by replacement and decode graphs keep every captured one alive). Host-side launch logic, CPU."""

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


def _kinds() -> dict[str, tuple[Args, int]]:
    """kind -> (its launch arguments at x, w, y; fp32 planes a row asks for: the splits for slots, else 1)."""
    from inlaid_worker.kernels.quant_common import split_launch
    from inlaid_worker.kernels.quant_tcg import tcg_args
    from inlaid_worker.kernels.quant_tcl import tcl_args
    from inlaid_worker.kernels.quant_tcs import tcs_args
    from inlaid_worker.kernels.quant_tcsx import tcsx_args
    from inlaid_worker.kernels.quant_tcv import tcv_args
    from inlaid_worker.kernels.quant_tcw import tcw_args

    return {  # block_m 16 / 32 / 64: M's row blocks differ inside a bucket, so the counters would too
        "tcw (slots; the H200's 7B down at 256)": (lambda x, w, y: tcw_args(x, w, 64, 2, 4, y)[1], 2),
        "tcwx": (lambda x, w, y: tcw_args(x, w, 64, 2, 4, y, slots=False)[1], 1),
        "tcs slots": (lambda x, w, y: tcs_args(x, w, 16, 5, 4, 2, y, slots=True)[1], 5),
        "tcs": (lambda x, w, y: tcs_args(x, w, 16, 5, 4, 2, y)[1], 1),
        "tcsx": (lambda x, w, y: tcsx_args(x, w, 32, 4, 4, 2, y)[1], 1),
        "tcl": (lambda x, w, y: tcl_args(x, w, 64, 64, 4, 4, 3, 0, y)[1], 1),
        "tcg": (lambda x, w, y: tcg_args(x, w, 16, 64, 4, 4, 2, False, 1, y)[1], 1),
        "tcv": (lambda x, w, y: tcv_args(x, w, 16, 64, 2, 4, 2, 1, y)[1], 1),
        "split_launch (gemv / hgemv / hgemvr / tc)": (lambda x, w, y: split_launch(x, w, y, 16, 64, 128, 4)[1], 1),
    }


def test_workspace_rows_is_the_bucket_up_to_512() -> None:
    from inlaid_worker.kernels.quant_common import workspace_rows

    assert [workspace_rows(m) for m in (1, 3, 24, 129, 256, 300, 512, 600)] == [1, 4, 32, 256, 256, 512, 512, 600]


@pytest.mark.parametrize("kind", list(_kinds()))
def test_every_m_of_a_bucket_reuses_the_first_ones_workspace(kind: str) -> None:
    """At each M of a bucket in ascending order (decode graphs are captured as batches grow) the launch gets the
    buffers the first M got (sized by M, 32 after 24 would replace them); they hold the bucket's rows of partials."""
    args_of, planes = _kinds()[kind]
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
            assert ws.numel() >= planes * bucket * N, (kind, bucket, ws.numel())
