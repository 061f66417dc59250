"""quant_tcs's x staging depth (session 16b, issue 4: the int4 GEMM at M = 17..64): X_CHUNK (x tiles in flight per
consumer warpgroup, the kernel's XCH) reaches the launch and the compiled kernel, its offline sm_90 builds at the
largest offered programs stay spill-free at the launch's register caps and inside the shared-memory estimate, and on
an sm_90 GPU the kernel with the deepest staging (XCH 4 at block_m 32 / 64) matches tcs_reference.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from inlaid_worker.kernels.quant_matmul_config import TCS_PLANS, TCS_SMEM_MAX, QMMConfig, _tcs, tcs_smem_bytes
from test_quant_tcs import _launch_twice_and_check, _weight

BENCH = Path(__file__).resolve().parents[3] / "bench" / "kernels"
WIDE = {8: 4, 16: 4, 32: 4, 64: 4}


@pytest.fixture
def wide_chunk():
    from inlaid_worker.kernels import quant_tcs

    saved = dict(quant_tcs.X_CHUNK)
    quant_tcs.X_CHUNK.update(WIDE)
    yield
    quant_tcs.X_CHUNK.clear()
    quant_tcs.X_CHUNK.update(saved)


def test_x_chunk_covers_every_block_m_and_reaches_the_launch() -> None:
    from inlaid_worker.kernels import quant_tcs

    assert quant_tcs.X_CHUNK_16 == {8: 4, 16: 4, 32: 2, 64: 1}, "session 16's rule (the benches' old variant)"
    assert set(quant_tcs.X_CHUNK) == set(quant_tcs.BLOCK_MS) and all(1 <= v <= 4 for v in quant_tcs.X_CHUNK.values())
    assert {quant_tcs.X_CHUNK[b] for b in (8, 16)} == {4}, "block_m <= 16 keeps session 12-16's kernels"
    w, _ = _weight(1280, 384, False, False)
    x = torch.zeros(40, 1280, dtype=torch.float16)
    y = torch.empty(40, 384, dtype=torch.float16)
    for bm in (32, 64):
        saved = quant_tcs.X_CHUNK[bm]
        try:
            for xch in (1, 3):
                quant_tcs.X_CHUNK[bm] = xch
                assert quant_tcs.tcs_args(x, w, bm, 2, 4, 2, y)[2]["XCH"] == xch
        finally:
            quant_tcs.X_CHUNK[bm] = saved


def _x_load_run(ptx: str) -> int:
    """The longest run of global loads before a shared store in the PTX (x tiles issued before their stores)."""
    seq = "".join("L" if "ld.global" in ln else "S" for ln in ptx.splitlines() if "ld.global" in ln or "st.shared" in ln)
    return max(len(r) for r in re.findall("L+", seq))


@pytest.mark.parametrize(("bm", "iters", "pipe", "sz"), [(64, 8, 1, 0), (64, 8, 0, 2), (32, 11, 1, 0)])
def test_deep_staging_builds_without_spills_offline(bm: int, iters: int, pipe: int, sz: int) -> None:
    """XCH 4 at the largest offered programs (block_m 64: 8 K tiles; block_m 32: 11) at the launch's register caps
    (quant_tcs.tcs_regs): no spills, 16 wgmma in the K loops, shared memory within tcs_smem_bytes <= TCS_SMEM_MAX,
    and 4x the x loads issued back to back of XCH 1 (the constexpr reaches the staging loop)."""
    sys.path.insert(0, str(BENCH))
    from s16_big_sass import build_xch
    from sass_tcl import analyse

    asm = build_xch(bm, 4, 2, iters, pipe, 1, sz, 4)
    res = analyse(asm)
    assert res["spill_stores"] == 0 and res["loop_local"] == 0, res
    assert res["loop_wgmma"] == 16 and not res["warnings"], res
    assert asm["shared_bytes"] <= tcs_smem_bytes(iters, 4, bm, 2, sz == 2) <= TCS_SMEM_MAX
    if bm == 64:
        one = build_xch(bm, 4, 2, iters, pipe, 1, sz, 1)
        assert _x_load_run(asm["ptx"]) >= 4 * _x_load_run(one["ptx"]) - 8, (_x_load_run(asm["ptx"]),
                                                                           _x_load_run(one["ptx"]))  # fmt: skip


def test_big_bench_candidates_are_tuner_candidates() -> None:
    """s16_big.py times a subset of the tuner's bucket-32 / 64 candidates (splits that fit) at the 7B / 13B shapes."""
    sys.path.insert(0, str(BENCH))
    import s16_big

    for shape, (k, n) in s16_big.SHAPES.items():
        for mb in (32, 64):
            cands = s16_big.candidates(k, n, mb)
            assert cands and all(c in _tcs(mb, n, k, 128) for c in cands), (shape, mb)
            assert {c.split_k for c in cands} <= set(s16_big.SPLITS[mb]) <= {
                s for _, _, _, splits in TCS_PLANS[mb] for s in splits}  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("kind", "bm", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
    [
        ("tcs2a", 32, 32, 4, False, False, torch.float16, 4096, 1408, 1),  # 4 tiles a warpgroup: one round
        ("tcs2a", 32, 19, 3, True, True, torch.float16, 1280, 328, 0),  # rows past M, N past the tile, act-order
        ("tcs2a", 64, 64, 11, False, False, torch.float16, 11008, 512, 1),  # 7B down's K, 8 tiles a split
        ("tcs2a", 64, 37, 2, False, True, torch.bfloat16, 1280, 384, 0),  # 5 tiles: a round of 3 loads
        ("tcsat", 32, 32, 8, False, False, torch.float16, 11008, 512, 1),
        ("tcsat", 32, 27, 1, False, False, torch.float16, 1280, 384, 0),  # no split: 10 tiles, rounds of 4, 4, 2
        ("tcsat", 64, 64, 4, False, False, torch.float16, 4096, 1408, 0),
        ("tcsat", 64, 50, 3, True, True, torch.float16, 1280, 416, 1),  # sym, act-order, boxes past N
    ],
)
def test_tcs_deep_staging_matches_reference(wide_chunk, kind: str, bm: int, m: int, split: int, sym: bool, act: bool,
                                            dtype: torch.dtype, k: int, n: int, use_pdl: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    cfg = QMMConfig(bm, 128, 128, split, 4, 4, True, kind)
    _launch_twice_and_check(lambda x, w, y: launch_quant_matmul(x, w, cfg, y), m, k, n, sym, act, dtype, use_pdl,
                            4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize("mb", [32, 64])
def test_tcs_deep_staging_every_candidate_at_7b_up(wide_chunk, mb: int) -> None:
    """Every tcs candidate of the bucket at 7B up (4096 x 11008) with XCH 4 against tcs_reference, 3 launches each."""
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    w, _ = _weight(4096, 11008, False, False, "cuda")
    x = torch.randn(mb - 3, 4096, device="cuda", dtype=torch.float16)
    model = tcs_reference(x, w, acc_scale=True)
    for c in _tcs(mb, 11008, 4096, 128):
        y = torch.empty(mb - 3, 11008, device="cuda", dtype=torch.float16)
        for _ in range(3):
            y.fill_(float("nan"))
            launch_quant_matmul(x, w, c, y)
            err = float((y.float() - model).norm() / model.norm())
            assert err < 5e-4, (c, err)
