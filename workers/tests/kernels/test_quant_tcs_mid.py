"""quant_tcs at block_m 32 / 64 (session 16, issue 4: the int4 GEMM at M = 17..64): the tuner's candidates of M buckets
32 and 64, the shared-memory bound and register caps of those programs (offline sm_90 build, no GPU), the interpreter
twins through quant_matmul's dispatcher, and on an sm_90 GPU the kernel against tcs_reference at small and real shapes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from inlaid_worker.kernels.quant_matmul_config import (
    TCS_PLANS,
    TCS_SMEM_MAX,
    TCS_SZ_TMA_KINDS,
    QMMConfig,
    _tcs,
    candidate_configs,
    tcs_fits,
    tcs_smem_bytes,
)
from test_quant_tcs import _launch_twice_and_check, _weight

BENCH = Path(__file__).resolve().parents[3] / "bench" / "kernels"

# (K, N) of the 7B / 13B decode GEMMs
SHAPES = ((4096, 12288), (4096, 4096), (4096, 22016), (11008, 4096), (4096, 11008), (5120, 15360), (5120, 5120),
          (5120, 27648), (13824, 5120))  # fmt: skip


def test_mid_buckets_offer_tcs_at_the_bucket_block_m() -> None:
    """M = 17..64: the tuner offers tcs2a / tcsat with block_m = the bucket (32 or 64), two warpgroups, 4 stages, and
    exactly the splits of TCS_PLANS that fit TCS_SMEM_MAX (x staged for the whole split: 8 / 16 KiB a K tile)."""
    for m, mb in ((17, 32), (32, 32), (33, 64), (64, 64)):
        for k, n in SHAPES:
            cands = [c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind.startswith("tcs")
                     and not c.kind.startswith("tcsx")]  # quant_tcsx: test_quant_tcsx.py
            assert cands == _tcs(mb, n, k, 128) and cands, (m, k, n)
            assert {c.kind for c in cands} == {"tcs2a", "tcsat"}
            assert all(c.block_m == mb and c.block_n == 128 and c.num_stages == 4 for c in cands)
            want = {(kind, s) for _, st, kind, splits in TCS_PLANS[mb] for s in splits
                    if tcs_fits(k, mb, s, st, 2, kind in TCS_SZ_TMA_KINDS)}  # fmt: skip
            assert {(c.kind, c.split_k) for c in cands} == want, (m, k, n)
    # what fits, by hand: 7B down (86 K tiles) at block_m 64 only in splits of <= 8 tiles (11, 16); at 32 from 6
    assert {c.split_k for c in _tcs(64, 4096, 11008, 128)} == {11, 16}
    assert {c.split_k for c in _tcs(32, 4096, 11008, 128)} == {6, 8, 11}
    assert {c.split_k for c in _tcs(64, 11008, 4096, 128)} == {4, 6, 8, 11, 16}, "4096: 8 tiles a split fit"
    assert not tcs_fits(4096, 64, 3, 4, 2) and tcs_fits(4096, 64, 4, 4, 2), "11 staged 16 KiB x tiles do not fit"
    assert not _tcs(128, 11008, 4096, 128), "no tcs above M = 64"
    assert not [c for c in candidate_configs(32, 11008, 4096, 128, 3, torch.float16) if c.kind.startswith("tcs")]


def test_tcs_args_accept_block_m_32_64_with_their_register_caps() -> None:
    from inlaid_worker.kernels import quant_tcs

    w, _ = _weight(1280, 384, False, False)
    y = torch.empty(40, 384, dtype=torch.float16)
    x = torch.zeros(40, 1280, dtype=torch.float16)
    grid, _, consts = quant_tcs.tcs_args(x, w, 32, 2, 4, 2, y)
    assert grid == (3, 2, 2) and consts["BLOCK_M"] == 32 and consts["CONS_REGS"] == quant_tcs.CONS_REGS
    grid, _, consts = quant_tcs.tcs_args(x, w, 64, 2, 4, 2, y)
    assert grid == (3, 2, 1) and consts["CONS_REGS"] == quant_tcs.WIDE_REGS[1]
    assert quant_tcs.tcs_regs(16, 2) == (80, 104) and quant_tcs.tcs_regs(32, 2) == (80, 104)
    launch, cons = quant_tcs.tcs_regs(64, 2)
    assert 12 * 32 * launch <= 65536, "one program's registers fit an SM"
    default = 3 * launch - cons - 24  # what setmaxnreg leaves the default warpgroup (the producer keeps 24)
    assert cons % 8 == 0 and default % 8 == 0 and 24 <= cons <= 256 and 24 <= default <= 256
    assert not quant_tcs.fits(1280, 64, 1, 4, 2), "10 staged 16 KiB x tiles + the ring: over SMEM_MAX"
    with pytest.raises(ValueError):
        quant_tcs.tcs_args(x, w, 64, 1, 4, 2, y)
    with pytest.raises(ValueError):
        quant_tcs.tcs_args(x, w, 128, 2, 4, 2, y)


@pytest.mark.parametrize(("bm", "iters", "pipe", "sz"), [(64, 8, 1, 0), (64, 9, 0, 2), (32, 16, 1, 0)])
def test_mid_builds_without_spills_within_the_smem_estimate_offline(bm: int, iters: int, pipe: int, sz: int) -> None:
    """The largest offered programs (block_m 64: 8 K tiles for tcs2a, 9 for tcsat (10 do not fit); block_m 32: 16, split 2 at K = 4096) build for sm_90 with the
    launch's register caps (quant_tcs.tcs_regs) without spills, inside tcs_smem_bytes <= TCS_SMEM_MAX (at block_m 64
    the default caps spill 32-44 stores: the reason for WIDE_REGS)."""
    sys.path.insert(0, str(BENCH))
    from s16_mid_sass import build16
    from sass_tcl import analyse

    asm = build16(bm, 4, 2, iters, pipe, 1, sz)
    res = analyse(asm)
    assert res["spill_stores"] == 0 and res["loop_local"] == 0, res
    assert res["loop_wgmma"] in (8, 16) and not res["warnings"], res  # 8 a K tile, the loop unrolled by 1 or 2
    assert asm["shared_bytes"] <= tcs_smem_bytes(iters, 4, bm, 2, sz == 2) <= TCS_SMEM_MAX


_TWIN_SCRIPT = """
import json, torch
from cases import _patch_interpreter_for_numpy, make_gptq
_patch_interpreter_for_numpy()
from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig
from inlaid_worker.kernels.quant_tcs import tcs_reference
torch.manual_seed(0)
raw = make_gptq(384, 64, 4, 128, sym=False, act=True, zero_offset=1)
w = prepare_gptq_weight(**raw, bits=4, group_size=128, sym=False)
out = {}
for kind in ("tcs2a", "tcsat"):
    for m, bm in ((20, 32), (40, 64)):
        x = torch.randn(m, 384).half()
        y = torch.empty(m, 64, dtype=torch.float16)
        launch_quant_matmul(x, w, QMMConfig(bm, 128, 128, 2, 4, 4, True, kind), y)
        model = tcs_reference(x, w, acc_scale=True).half()
        out[f"{kind} {bm}"] = float((y == model).float().mean())
print(json.dumps(out))
"""


def test_mid_twins_under_the_interpreter_have_the_acc_scale_numerics() -> None:
    """block_m 32 / 64 through quant_matmul's dispatcher under TRITON_INTERPRET=1 (quant_tc "tc" with that block_m,
    rows past M masked): element by element the acc_scale model (act-order, split-K 2 of 3 K tiles)."""
    import json
    import os
    import subprocess

    here = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{here.parents[1]}{os.pathsep}{here}")
    proc = subprocess.run([sys.executable, "-c", _TWIN_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(res) == {"tcs2a 32", "tcs2a 64", "tcsat 32", "tcsat 64"}
    assert all(v >= 0.97 for v in res.values()), res


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("kind", "bm", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
    [
        ("tcs2a", 32, 32, 4, False, False, torch.float16, 4096, 1408, 1),
        ("tcs2a", 32, 19, 3, True, True, torch.float16, 1280, 328, 0),  # rows past M, N past the tile, act-order
        ("tcs2a", 64, 64, 11, False, False, torch.float16, 11008, 512, 1),  # 7B down's K, 8 tiles a split
        ("tcs2a", 64, 37, 2, False, True, torch.bfloat16, 1280, 384, 0),
        ("tcsat", 32, 32, 8, False, False, torch.float16, 11008, 512, 1),
        ("tcsat", 32, 27, 1, False, False, torch.float16, 1280, 384, 0),  # no split: plain stores
        ("tcsat", 64, 64, 4, False, False, torch.float16, 4096, 1408, 0),
        ("tcsat", 64, 50, 3, True, True, torch.float16, 1280, 416, 1),  # sym, act-order, boxes past N
    ],
)
def test_tcs_mid_matches_reference(kind: str, bm: int, m: int, split: int, sym: bool, act: bool, dtype: torch.dtype,
                                   k: int, n: int, use_pdl: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    cfg = QMMConfig(bm, 128, 128, split, 4, 4, True, kind)
    _launch_twice_and_check(lambda x, w, y: launch_quant_matmul(x, w, cfg, y), m, k, n, sym, act, dtype, use_pdl,
                            4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize("mb", [32, 64])
def test_tcs_mid_every_candidate_at_7b_gate_up(mb: int) -> None:
    """Every tcs candidate of the bucket at 7B gate/up (4096 x 22016) against tcs_reference, 4 launches each."""
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    w, _ = _weight(4096, 22016, False, False, "cuda")
    x = torch.randn(mb, 4096, device="cuda", dtype=torch.float16)
    model = tcs_reference(x, w, acc_scale=True)
    for c in _tcs(mb, 22016, 4096, 128):
        y = torch.empty(mb, 22016, device="cuda", dtype=torch.float16)
        for _ in range(4):
            y.fill_(float("nan"))
            launch_quant_matmul(x, w, c, y)
            err = float((y.float() - model).norm() / model.norm())
            assert err < 5e-4, (c, err)
