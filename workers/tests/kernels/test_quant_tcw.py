"""quant_tcw (warp-specialized large-M Gluon GEMM, kind tcw): host-side launch logic and the offline sm_90 build on
the CPU; the kernel against the dequantized fp32 product on CUDA (sm_90; skipped elsewhere)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from cases import ON_SM90
from gptq_weight import gptq_weight as _weight
from inlaid_worker.kernels.quant_matmul_config import QMMConfig


def test_tcw_args_grid_split_and_descriptors() -> None:
    from inlaid_worker.kernels.quant_tcw import BLOCK_N, tcw_args

    k, n, m = 1280, 328, 300  # 10 K tiles, N and M not multiples of the tile
    w, _ = _weight(k, n, False, False)
    xp = torch.zeros(m, k, dtype=torch.float16)
    y = torch.empty(m, n, dtype=torch.float16)
    grid, args, consts = tcw_args(xp, w, 128, 3, 4, y)
    assert grid == (-(-n // BLOCK_N), 3, 3), "N tiles of 128 columns, 3 K splits of 4 / 4 / 2 tiles, 3 row blocks"
    assert args[10] == 4 and args[11] == 3, "ITERS, SPLIT_K"
    assert consts["USE_SPLIT"] and consts["BLOCK_M"] == 128 and consts["STAGES"] == 4
    xd, wd = args[0], args[1]
    assert list(xd.block_shape) == [128, 128] and list(wd.block_shape) == [16, BLOCK_N]
    assert xd.base is xp and wd.base is w.qweight
    cnt = args[6]
    assert cnt.numel() >= 4 * grid[0] * grid[2], "one arrival counter per warpgroup tile (and 256-row half)"
    assert args[5].numel() >= 3 * m * n, "one fp32 slot per split"
    assert consts["PP"] and consts["SLOTS"], "defaults: ping-pong, slot split-K"
    _, args_x, consts_x = tcw_args(xp, w, 128, 3, 4, y, pp=False, slots=False)
    assert not consts_x["PP"] and not consts_x["SLOTS"] and bool((args_x[5] == 0).all()), "read-and-clear workspace"
    grid1, args1, consts1 = tcw_args(xp, w, 256, 1, 3, y)
    assert grid1 == (3, 1, 2) and not consts1["USE_SPLIT"] and args1[5] is y, "no workspace without split-K"


def test_tcw_refuses_what_it_cannot_run() -> None:
    from inlaid_worker.kernels.quant_tcw import tcw_args, tcw_supported

    w, _ = _weight(256, 128, False, False)
    assert tcw_supported(w, 256)
    assert not tcw_supported(w, 256 + 64), "K a multiple of 128"
    assert not tcw_supported(dataclasses.replace(w, bits=3), 256), "4-bit only"
    kmajor = dataclasses.replace(w, qweight=w.qweight.t().contiguous().t())
    assert not tcw_supported(kmajor, 256), "TMA needs N-contiguous words"
    x = torch.zeros(8, 256, dtype=torch.float16)
    with pytest.raises(ValueError):
        tcw_args(x, w, 128, 1, 1, torch.empty(8, 128, dtype=torch.float16))


def test_tcw_builds_for_sm90_offline() -> None:
    """The sm_90 build (Triton's ptxas, no GPU): three partitions with their register budgets, TMA copies, one
    8-wgmma chain per consumer warpgroup, and no local memory inside the K loops (bench/kernels/sass_tcw.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from inlaid_worker.kernels.quant_tcw import CONSUMER_REGS
    from sass_tcl import analyse
    from sass_tcw import build

    asm = build(256, 3, False)
    ptx = asm["ptx"]
    assert f"setmaxnreg.inc.sync.aligned.u32 \t{CONSUMER_REGS};" in ptx and "setmaxnreg.dec.sync.aligned.u32 \t24;" in ptx
    assert ptx.count("cp.async.bulk.tensor") >= 2 and ptx.count("wgmma.mma_async") == 16
    res = analyse(asm)
    assert res["spill_stores"] == 0 and res["smem"] <= 227 * 1024, res


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("kind", "bm", "stages", "m", "split", "sym", "act", "dtype", "k", "n"),
    [
        ("tcw", 128, 4, 256, 1, False, False, torch.float16, 640, 328),  # N not a multiple of 128
        ("tcw", 128, 4, 100, 3, False, False, torch.float16, 1280, 512),  # masked rows, a short last split
        ("tcw", 256, 3, 300, 2, True, True, torch.float16, 640, 328),  # sym + act-order, rows past M, halves
        ("tcw", 256, 3, 256, 1, False, True, torch.bfloat16, 1024, 384),
        ("tcw", 128, 4, 200, 2, False, True, torch.bfloat16, 640, 328),
        ("tcw", 256, 2, 512, 4, False, False, torch.float16, 1280, 256),
        ("tcwn", 128, 5, 512, 1, True, False, torch.float16, 512, 1000),
        ("tcwn", 256, 3, 260, 3, False, False, torch.bfloat16, 1280, 256),
        ("tcwx", 128, 4, 130, 2, False, True, torch.float16, 640, 328),
        ("tcwx", 256, 3, 512, 3, False, False, torch.float16, 1280, 384),
    ],
)
def test_tcw_matches_reference(kind: str, bm: int, stages: int, m: int, split: int, sym: bool, act: bool,
                               dtype: torch.dtype, k: int, n: int) -> None:  # fmt: skip
    from inlaid_worker.kernels import quant_common, quant_tcw
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    torch.manual_seed(0)
    w, ref_w = _weight(k, n, sym, act, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = x.float() @ ref_w
    y = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
    for _ in range(2):  # twice: the slots and counters are reused by the second call
        launch_quant_matmul(x, w, QMMConfig(bm, 128, 128, split, 4, stages, True, kind), y)
    err = float((y.float() - ref).norm() / ref.norm())
    assert err < (5e-3 if dtype == torch.bfloat16 else 1e-3), f"rel err {err:.2e}"
    for ws, cnt in quant_common._WORKSPACES.values():
        assert bool((ws == 0).all()) and bool((cnt == 0).all()), "read-and-clear workspace left clean"
    for _, cnt in quant_tcw._SLOT_WS.values():
        assert bool((cnt == 0).all()), "slot counters left zeroed"


@pytest.mark.parametrize("m", [200, 256, 300, 512, 4096])
def test_tcw_candidates_fit_the_h200(m: int) -> None:
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs

    cands = [c for c in candidate_configs(m, 11008, 4096, 128, 4, torch.float16) if c.kind.startswith("tcw")]
    assert cands, f"M={m}: the warp-specialized kernel is offered"
    for c in cands:
        assert c.block_n == 128 and c.num_warps == 4 and c.block_m in (128, 256)
        smem = c.num_stages * (c.block_m * 128 * 2 + 16 * 128 * 4)  # x tile + words per ring slot
        assert smem <= 227 * 1024, f"{c}: shared memory"
        assert c.kind in ("tcw", "tcwn")


def test_tcw_not_offered_where_it_cannot_run() -> None:
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs

    def kinds(m: int, n: int = 4096, bits: int = 4, k: int = 4096, group: int = 128) -> set[str]:
        return {c.kind for c in candidate_configs(m, n, k, group, bits, torch.float16)}

    assert not {"tcw", "tcwn"} & kinds(128), "below M = 129 the tcl / tc kernels stay"
    assert not {"tcw", "tcwn"} & kinds(256, bits=3), "4-bit only"
    assert not {"tcw", "tcwn"} & kinds(256, n=4098), "TMA: 16-byte word rows"
    assert not {"tcw", "tcwn"} & kinds(256, k=4096 + 64, group=64)
    assert {"tcw", "tcwn"} <= kinds(256) and {"tcw", "tcwn"} <= kinds(512)


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("k", "n", "m"), [(11008, 4096, 256), (4096, 22016, 512), (4096, 11008, 300)])
def test_shipped_tcw_picks_pass_the_guard_and_match(monkeypatch: pytest.MonkeyPatch, k: int, n: int, m: int) -> None:
    """quant_matmul with the shipped H200 table: the 7B buckets that ship a tcw kind run it (through the guard), and
    the product matches the dequantized fp32 one."""
    from inlaid_worker.kernels import qmm_tuned
    from inlaid_worker.kernels import quant_matmul_config as qmc
    from inlaid_worker.kernels.quant_matmul import quant_matmul

    monkeypatch.setenv("INLAID_QMM_TUNED", "1")
    monkeypatch.setattr(qmc, "_TUNED", {})
    torch.manual_seed(0)
    w, ref_w = _weight(k, n, False, False, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    shipped = qmm_tuned.shipped_pick(x.device, x.dtype, qmc.m_bucket(m), n, k, 4, 128)
    assert shipped is not None and shipped.kind.startswith("tcw"), shipped
    y = quant_matmul(x, w)
    assert qmc.LAST_PICK[0] == shipped, "the shipped pick is used (a candidate, accepted by the guard)"
    ref = x.float() @ ref_w
    assert float((y.float() - ref).norm() / ref.norm()) < 1e-3
