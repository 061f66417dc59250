"""quant_tcsx (session 17, issue 4; bench-only kinds "tcsx" / "tcsx2": quant_tcs's ACC_SCALE K loop with x streamed
through the word ring by TMA from an operand-ordered copy of x). CPU: the kinds stay out of the tuner, the dispatcher
and the tuned tables; the launch plan and shared-memory estimate; the pre-pass's column order is the operand K order
quant_tcs stages; the offline sm_90 builds at block_m 16 / 32 / 64 / 128, split 1 / 2 (no spills, shared memory within
the estimate and the hardware limit, each consumer K loop's slot release after its wgmma wait). On an sm_90 GPU: the
kernel against tcs_reference(acc_scale=True) and many launches at a 7B shape (bench/kernels/s17_tcsx.sh runs these).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from test_quant_tcs import _launch_twice_and_check, _weight

BENCH = Path(__file__).resolve().parents[3] / "bench" / "kernels"
TUNED = Path(__file__).resolve().parents[2] / "inlaid_worker" / "kernels" / "tuned"
KINDS = ("tcsx", "tcsx2")


def test_tcsx_is_bench_only() -> None:
    """Not a tuner candidate at any M bucket, not a dispatched kind, in no tuned table; launch_quant_matmul refuses
    the kind and launch_tcsx refuses the CPU with a clear error (no interpreter twin)."""
    from inlaid_worker.kernels import quant_tcsx
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import TCS_KINDS, QMMConfig, candidate_configs

    assert set(quant_tcsx.KINDS) == set(KINDS) and not set(KINDS) & set(TCS_KINDS)
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for k, n in ((4096, 22016), (11008, 4096), (5120, 15360)):
            assert not [c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind.startswith("tcsx")]
    for table in TUNED.glob("*.json"):
        assert "tcsx" not in table.read_text(), table
    w, _ = _weight(256, 128, False, False)
    x = torch.zeros(4, 256, dtype=torch.float16)
    y = torch.empty(4, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="unknown kernel kind"):
        launch_quant_matmul(x, w, QMMConfig(16, 128, 128, 1, 4, 4, True, "tcsx"), y)
    with pytest.raises(RuntimeError, match="bench-only"):
        quant_tcsx.launch_tcsx(x, w, 16, 1, 4, 2, y, "tcsx")
    with pytest.raises(ValueError, match="unknown tcsx kind"):
        quant_tcsx.launch_tcsx(x, w, 16, 1, 4, 2, y, "tcs2a")


def test_tcsx_plan_and_shared_memory() -> None:
    """The grid (column tiles, splits, row blocks), split 1 writes y directly, 4 stages fit every block_m (the ring is
    all the shared memory: splits of 1 fit at any K), and the estimate's programs an SM."""
    from inlaid_worker.kernels import quant_tcsx

    w, _ = _weight(1280, 328, False, False)  # 10 K tiles, N past the tile
    x = torch.zeros(40, 1280, dtype=torch.float16)
    y = torch.empty(40, 328, dtype=torch.float16)
    grid, args, consts = quant_tcsx.tcsx_args(x, w, 32, 1, 4, 2, y)
    assert grid == (3, 1, 2) and args[5] is y and args[6] is y and not consts["USE_SPLIT"]
    assert args[10] == 10 and consts["CONS_REGS"] == 104
    grid, args, consts = quant_tcsx.tcsx_args(x, w, 64, 3, 4, 2, y, pipe=1)
    assert grid == (3, 3, 1) and args[10] == 4 and consts["USE_SPLIT"] and consts["PIPE"] == 1
    assert consts["CONS_REGS"] == quant_tcsx.WIDE_REGS[1]
    est = {bm: quant_tcsx.tcsx_smem_bytes(4, bm, 2) for bm in quant_tcsx.BLOCK_MS}
    assert est == {16: 50176, 32: 66560, 64: 99328, 128: 164864}
    assert all(v <= quant_tcsx.SMEM_MAX for v in est.values())
    assert quant_tcsx.tcsx_smem_bytes(6, 128, 2) > quant_tcsx.SMEM_MAX
    with pytest.raises(ValueError, match="shared memory"):
        quant_tcsx.tcsx_args(x, w, 128, 1, 6, 2, y)
    with pytest.raises(ValueError):
        quant_tcsx.tcsx_args(x, w, 8, 1, 4, 2, y)  # block_m 8: not a tcsx size
    with pytest.raises(ValueError, match="two consumer warpgroups"):
        quant_tcsx.tcsx_args(x, w, 128, 1, 4, 1, y)  # one warpgroup at 80 registers: ptxas refuses block_m 128
    assert quant_tcsx.programs_per_sm(4, 32, 2) == 2 and quant_tcsx.programs_per_sm(4, 64, 2) == 1
    assert quant_tcsx.programs_per_sm(4, 64, 2, (80, 104)) == 2, "the ring alone would let two share an SM"


def test_prepass_writes_the_operand_k_order_quant_tcs_stages() -> None:
    """quant_tcl.permute_x's order (x_order) puts x column kk = 32 t + 8 wi + 4 e + s of each K tile at column
    32 wi + 8 s + 2 t + e: what quant_tcs's staging stores (x5 [M, t, wi, e, s] permuted to [M, wi, s, t, e]); with
    act-order the gather is composed in (packed row k reads x[:, perm[k]])."""
    from inlaid_worker.kernels.quant_tcl import x_order

    k = 384
    x = torch.arange(k, dtype=torch.float32)[None, :]
    staged = x.reshape(1, k // 128, 4, 4, 2, 4).permute(0, 1, 3, 5, 2, 4).reshape(1, k)  # quant_tcs's staging
    order = x_order(k, None, torch.device("cpu"))
    assert torch.equal(x[:, order], staged)
    assert not torch.equal(order, torch.arange(k)), "an interleaving, not the identity"
    perm = torch.randperm(k).int()
    assert torch.equal(x_order(k, perm, torch.device("cpu")), perm.long()[order])


@pytest.mark.parametrize(("bm", "split", "pipe"), [(16, 2, 1), (32, 1, 0), (64, 1, 0), (64, 2, 1), (128, 1, 1),
                                                   (128, 2, 0)])  # fmt: skip
def test_tcsx_builds_offline(bm: int, split: int, pipe: int) -> None:
    """The sm_90 build (Triton's ptxas, no GPU) at the launch's register caps: no spills, no local memory in the loop,
    no ptxas warning (wgmma serialization), two consumer K loops of 8 wgmma instructions a K tile, shared memory
    within tcsx_smem_bytes <= SMEM_MAX, and in each K loop no slot release before a wgmma wait (tcs_ptx_order:
    session 13's race; ~5-20 s a build uncached)."""
    sys.path.insert(0, str(BENCH))
    from inlaid_worker.kernels import quant_tcsx
    from s17_tcsx_sass import build, summary

    res = summary((bm, 4, 2), build(bm, 4, 2, split, pipe))
    assert res["spill_stores"] == 0 and res["loop_local"] == 0 and not res["warnings"], res
    assert res["k_loops"] == 2 and res["early_releases"] == [0, 0], res
    assert all(v["mix"].get("HGMMA") == 8 for k, v in res["mix"].items() if k in ("kloop0", "kloop1")), res["mix"]
    assert res["shared_bytes"] <= quant_tcsx.tcsx_smem_bytes(4, bm, 2) <= quant_tcsx.SMEM_MAX
    assert res["tma"] >= 2 and res["regs"] <= res["regs_caps"][0]


def test_tcsx_producer_copies_x_only_after_the_pdl_wait_offline() -> None:
    """Under PDL (mode 1) the producer's first word copies go out before griddepcontrol.wait (weights: overlap the
    previous kernel's tail) and no x copy does (x may be written by the previous kernel): in the sm_90 PTX, the TMA
    copies before the producer's wait all read one descriptor (the words) and the first copy after it another (x)."""
    import re

    sys.path.insert(0, str(BENCH))
    from s17_tcsx_sass import build

    lines = [ln.strip() for ln in build(32, 4, 2, 2, 1, gdc=1)["ptx"].splitlines()]
    copies = [
        (i, m.group(1))
        for i, ln in enumerate(lines)
        if (m := re.search(r"cp\.async\.bulk\.tensor.*\[(%rd\d+), \{", ln))
    ]
    first = copies[0][0]
    waits = [i for i, ln in enumerate(lines) if "griddepcontrol.wait" in ln and i > first]
    assert waits, "a PDL wait after the producer's first copy"
    before = {d for i, d in copies if i < waits[0]}
    after = [d for i, d in copies if i > waits[0]]
    assert len(before) == 1 and after and after[0] not in before, (before, after[:3])


# ----------------------------------------------------------------------------------------------------------- GPU
GPU_CASES = [  # kind, bm, nwg, stages, m, split, sym, act, dtype, k, n, use_pdl
    ("tcsx", 16, 2, 4, 16, 1, False, False, torch.float16, 1280, 384, 0),
    ("tcsx2", 16, 2, 4, 11, 3, True, True, torch.float16, 1280, 328, 1),  # rows past M, N past the tile, act-order
    ("tcsx", 32, 2, 4, 32, 2, False, False, torch.float16, 4096, 1408, 1),
    ("tcsx2", 32, 2, 2, 27, 1, False, True, torch.bfloat16, 1280, 384, 0),  # a 2-slot ring
    ("tcsx", 64, 2, 4, 64, 1, False, False, torch.float16, 11008, 512, 0),  # 86 K tiles in one program
    ("tcsx2", 64, 2, 8, 50, 2, True, True, torch.float16, 1280, 416, 1),
    ("tcsx2", 64, 2, 4, 64, 4, False, False, torch.bfloat16, 4096, 1408, 1),
    ("tcsx", 64, 1, 4, 64, 2, False, False, torch.float16, 4096, 1408, 1),  # one consumer warpgroup
    ("tcsx", 128, 2, 4, 128, 1, False, False, torch.float16, 4096, 1408, 1),
    ("tcsx2", 128, 2, 5, 100, 2, False, True, torch.float16, 1280, 384, 0),
]


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("kind", "bm", "nwg", "stages", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
                         GPU_CASES)  # fmt: skip
def test_tcsx_matches_reference(kind: str, bm: int, nwg: int, stages: int, m: int, split: int, sym: bool, act: bool,
                                dtype: torch.dtype, k: int, n: int, use_pdl: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_tcsx import launch_tcsx

    _launch_twice_and_check(lambda x, w, y: launch_tcsx(x, w, bm, split, stages, nwg, y, kind), m, k, n, sym, act,
                            dtype, use_pdl, 4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
def test_tcsx_prepermuted_x_and_many_launches_at_7b_gate_up() -> None:
    """7B gate/up (4096 x 22016) at M = 64: both kinds, block_m 64 and 32, splits 1 / 2, x permuted once (xp), 12
    launches each against tcs_reference(acc_scale=True) (a race shows as some launches off, session 13)."""
    from inlaid_worker.kernels.quant_tcs import tcs_reference
    from inlaid_worker.kernels.quant_tcsx import launch_tcsx, tcsx_permute

    torch.manual_seed(0)
    w, _ = _weight(4096, 22016, False, False, "cuda")
    x = torch.randn(64, 4096, device="cuda", dtype=torch.float16)
    model = tcs_reference(x, w, acc_scale=True)
    xp = tcsx_permute(x, w)
    bad = {}
    for kind in KINDS:
        for bm, split in ((64, 1), (64, 2), (32, 1)):
            y = torch.empty(64, 22016, device="cuda", dtype=torch.float16)
            errs = []
            for _ in range(12):
                y.fill_(float("nan"))
                launch_tcsx(x, w, bm, split, 4, 2, y, kind, xp=xp)
                errs.append(float((y.float() - model).norm() / model.norm()))
            bad[f"{kind} m{bm} s{split}"] = sum(not (e < 5e-4) for e in errs)
    assert not any(bad.values()), json.dumps(bad)
