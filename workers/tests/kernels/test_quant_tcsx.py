"""quant_tcsx (session 17, issue 4; kinds "tcsx" / "tcsx2": quant_tcs's ACC_SCALE K loop with x streamed through the
word ring by TMA from an operand-ordered copy of x). CPU: the tuner's candidates at buckets 32 / 64 / 128 / 256 (and
nowhere else), the dispatcher's interpreter twin, the launch plan and shared-memory estimate; the pre-pass's column
order is the operand K order quant_tcs stages; the offline sm_90 builds at block_m 16 / 32 / 64 / 128, split 1 / 2 (no
spills, shared memory within the estimate and the hardware limit, each consumer K loop's slot release after its wgmma
wait).
On an sm_90 GPU: the kernel and the dispatcher against tcs_reference(acc_scale=True), many launches at a 7B shape, a
tcsx pick taken by quant_matmul's tuner (shipped-pick path) and replayed in a CUDA graph (the pre-pass inside the call).
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


# (K, N) of the 7B / 13B decode GEMMs
SHAPES = ((4096, 12288), (4096, 4096), (4096, 22016), (11008, 4096), (4096, 11008), (5120, 15360), (5120, 5120),
          (5120, 27648), (13824, 5120))  # fmt: skip


def test_tuner_offers_tcsx_at_buckets_32_to_256_only() -> None:
    """M = 17..256: the tuner offers exactly _tcsx's candidates (TCSX_PLANS x tcsx_splits: 1-3 splits whose grid holds
    66..700 programs a row block at buckets <= 128, over both 128-row blocks at bucket 256); none at M <= 16 (block_m
    16 lost every H200 point of run 1) or in bucket 512 (M > 256: prefill too; measured bench-only, not offered), for
    3-bit, for N % 4 != 0 (TMA) or on a GPU without sm_90; quant_tcsx's kinds are quant_matmul_config's."""
    from inlaid_worker.kernels import quant_tcsx
    from inlaid_worker.kernels.quant_matmul_config import (
        TCSX_KINDS,
        TCSX_PLANS,
        _tcsx,
        candidate_configs,
        tcsx_row_blocks,
        tcsx_splits,
    )

    # (session 19's stream-K kind "tcsxk" is quant_tcsxk's: test_quant_tcsxk.py)
    assert tuple(quant_tcsx.KINDS) == TCSX_KINDS == (*KINDS, "tcsxk", "tcsxks") and set(TCSX_PLANS) == {32, 64, 128, 256}
    for m, mb in ((17, 32), (32, 32), (33, 64), (64, 64), (65, 128), (128, 128), (129, 256), (200, 256), (256, 256)):
        for k, n in SHAPES:
            cands = [c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind in KINDS]
            assert cands == [c for c in _tcsx(mb, n, k, 128) if c.kind in KINDS] and cands, (m, k, n)
            assert cands == [c for c in candidate_configs(m, n, k, 128, 4, torch.bfloat16) if c.kind in KINDS]
            for c in cands:
                assert c.block_m <= mb and c.block_k == 128 and c.num_warps == 4 and c.block_n in (64, 128)
                assert quant_tcsx.tcsx_smem_bytes(c.num_stages, c.block_m, c.block_n // 64) <= quant_tcsx.SMEM_MAX
                assert c.split_k in tcsx_splits(k, n, c.block_n, tcsx_row_blocks(mb, c.block_m))
                assert mb < 256 or c.block_m == 128, "bucket 256: two row blocks of 128"
    # by hand: 7B gate/up (172 column tiles of 128) only split 1-2 (4 would be 688 programs: also in 66..700)
    assert tcsx_splits(4096, 22016, 128) == [1, 2, 4] and tcsx_splits(4096, 4096, 128) == [4, 8, 16]
    assert tcsx_splits(4096, 22016, 64) == [1, 2] and tcsx_splits(11008, 4096, 128) == [4, 8, 16]
    # bucket 256 counts both row blocks (7B down: 2 x 32 tiles, so split 2 fills one wave; 13B gate/up: 432 at split 1)
    assert tcsx_row_blocks(64, 32) == tcsx_row_blocks(128, 128) == 1 and tcsx_row_blocks(256, 128) == 2
    assert tcsx_splits(11008, 4096, 128, 2) == [2, 4, 8] and tcsx_splits(5120, 27648, 128, 2) == [1]
    assert {c.split_k for c in _tcsx(256, 4096, 11008, 128) if c.kind in KINDS} == {2, 4, 8}
    for m in (1, 2, 4, 8, 16, 257, 512, 2048):
        assert not [c for c in candidate_configs(m, 11008, 4096, 128, 4, torch.float16) if c.kind in KINDS], m
    assert not [c for c in candidate_configs(64, 11008, 4096, 128, 3, torch.float16) if c.kind in KINDS]
    assert not _tcsx(64, 11010, 4096, 128) and not _tcsx(64, 11008, 4096, 64), "N % 4, group % 128"
    assert not [c for c in candidate_configs(64, 11008, 4096, 128, 4, torch.float16, hopper=False) if c.kind in KINDS]


RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"
# session 17's ship files: run 2 (16 picks at buckets 32 / 64 / 128) and helper H7's M = 256 run (4 picks at bucket 256)
SHIPS = {"kernels-2026-12-01-s17-tcsx-run2-ship.json": 16, "kernels-2026-12-01-s17-tcsx-m256-ship.json": 4}


def test_h200_table_ships_exactly_the_measured_tcsx_picks() -> None:
    """The H200 table's tcsx entries are the ship rows of session 17's run 2 and M = 256 run (each >= 1.03x the old pick
    iso and under PDL, SHIPS): the same (M bucket, N, K) -> config, 16 + 4 of them, at buckets 32 / 64 / 128 / 256 only
    (4-bit g128 fp16), each from its file and a candidate of today's tuner; no other table ships a tcsx pick."""
    import torch as _t
    from inlaid_worker.kernels import qmm_tuned
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs, m_bucket

    sys.path.insert(0, str(BENCH))
    from tuned_table import parse_pick

    doc = json.loads((TUNED / "nvidia-h200.json").read_text())
    tcsx = {(e["m_bucket"], e["n"], e["k"]): e for e in doc["entries"] if e["config"]["kind"] in KINDS}
    ship, src = {}, {}
    for name, count in SHIPS.items():
        rows = json.loads((RESULTS / name).read_text())["bench"]
        assert len(rows) == count, name
        for r in rows:
            key = (m_bucket(r["M"]), r["N"], r["K"])
            assert key not in ship, key
            ship[key], src[key] = r, name
    # session 19 (test_quant_tcsxk.py) replaced one of them, 13B gate/up at bucket 256, by its stream-K kind
    s19 = json.loads((RESULTS / "kernels-2026-12-01-s19-bigm-ship.json").read_text())["bench"]
    for r in s19:
        ship.pop((m_bucket(r["M"]), r["N"], r["K"]), None)
    assert len(ship) == 19 and set(tcsx) == set(ship), sorted(set(tcsx) ^ set(ship))
    for key, e in tcsx.items():
        r = ship[key]
        cfg = qmm_tuned.config_from_dict(e["config"])
        assert cfg == parse_pick(r["pick"]) and e["from"] == src[key] and key[0] in (32, 64, 128, 256), key
        assert (e["dtype"], e["bits"], e["group"]) == ("float16", 4, 128)
        assert r["before_iso_us"] / r["pick_iso_us"] >= 1.03 and r["before_us"] / r["pick_us"] >= 1.03, key
        assert cfg in candidate_configs(key[0], key[1], key[2], 128, 4, _t.float16), key
    for table in TUNED.glob("*.json"):
        if table.name != "nvidia-h200.json":
            assert "tcsx" not in table.read_text(), table


def test_launch_tcsx_refuses_the_cpu_and_unknown_kinds() -> None:
    from inlaid_worker.kernels import quant_tcsx

    w, _ = _weight(256, 128, False, False)
    x = torch.zeros(4, 256, dtype=torch.float16)
    y = torch.empty(4, 128, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="CUDA sm_90 only"):
        quant_tcsx.launch_tcsx(x, w, 16, 1, 4, 2, y, "tcsx")
    with pytest.raises(ValueError, match="unknown tcsx kind"):
        quant_tcsx.launch_tcsx(x, w, 16, 1, 4, 2, y, "tcs2a")


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
for kind, m, bm, bn, split in (("tcsx", 20, 32, 128, 1), ("tcsx2", 40, 64, 64, 2), ("tcsx2", 90, 128, 128, 2)):
    x = torch.randn(m, 384).half()
    y = torch.full((m, 64), float("nan"), dtype=torch.float16)
    launch_quant_matmul(x, w, QMMConfig(bm, bn, 128, split, 4, 4, True, kind), y)
    model = tcs_reference(x, w, acc_scale=True).half()
    out[f"{kind} {bm}"] = float((y == model).float().mean())
print(json.dumps(out))
"""


def test_dispatcher_twins_under_the_interpreter_have_the_acc_scale_numerics() -> None:
    """tcsx / tcsx2 through quant_matmul's dispatcher under TRITON_INTERPRET=1 (quant_tc "tc", block_m capped at 64:
    M = 90 in two row blocks, rows past M masked): element by element the acc_scale model (act-order, split-K)."""
    import os
    import subprocess

    here = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{here.parents[1]}{os.pathsep}{here}")
    proc = subprocess.run([sys.executable, "-c", _TWIN_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(res) == {"tcsx 32", "tcsx2 64", "tcsx2 128"}
    assert all(v >= 0.97 for v in res.values()), res


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


DISPATCH_CASES = [  # kind, bm, bn, stages, m, split, sym, act, dtype, k, n, use_pdl: through launch_quant_matmul
    ("tcsx2", 32, 128, 4, 32, 1, False, False, torch.float16, 4096, 1408, 1),
    ("tcsx", 32, 128, 4, 64, 2, False, True, torch.float16, 1280, 384, 0),  # block_m 32 at M = 64: two row blocks
    ("tcsx", 64, 64, 4, 64, 1, True, False, torch.float16, 4096, 1408, 1),  # one consumer warpgroup
    ("tcsx2", 64, 128, 8, 45, 2, False, True, torch.bfloat16, 1280, 416, 0),
    ("tcsx", 128, 128, 4, 128, 2, False, False, torch.float16, 4096, 1408, 1),
    ("tcsx2", 128, 128, 5, 77, 1, False, True, torch.float16, 1280, 384, 1),
]


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("kind", "bm", "bn", "stages", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
                         DISPATCH_CASES)  # fmt: skip
def test_tcsx_through_the_dispatcher_matches_reference(kind: str, bm: int, bn: int, stages: int, m: int, split: int,
                                                       sym: bool, act: bool, dtype: torch.dtype, k: int, n: int,
                                                       use_pdl: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    cfg = QMMConfig(bm, bn, 128, split, 4, stages, True, kind)
    _launch_twice_and_check(lambda x, w, y: launch_quant_matmul(x, w, cfg, y), m, k, n, sym, act, dtype, use_pdl,
                            4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
def test_tuner_takes_a_shipped_tcsx_pick_and_it_replays_in_a_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """quant_matmul at M = 48 (bucket 64) with a shipped tcsx pick: the tuner's guard accepts it, quant_matmul runs it
    (LAST_PICK) and matches tcs_reference; captured in a CUDA graph (pre-pass + kernel, PDL on) and replayed on new x
    it still does (the pre-pass's x copy comes from the graph's pool)."""
    from inlaid_worker.kernels import pdl, qmm_tuned
    from inlaid_worker.kernels import quant_matmul_config as qmc
    from inlaid_worker.kernels.quant_matmul import quant_matmul
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    k, n = 1280, 1408
    w, _ = _weight(k, n, False, True, "cuda")
    cands = qmc.candidate_configs(48, n, k, 128, 4, torch.float16)
    pick = next(c for c in cands if c.kind == "tcsx2" and c.block_m == 64)
    monkeypatch.setattr(qmm_tuned, "shipped_pick", lambda *a: pick)
    monkeypatch.setattr(qmc, "_TUNED", {})
    x = torch.randn(48, k, device="cuda", dtype=torch.float16)
    y = quant_matmul(x, w)
    assert qmc.LAST_PICK[0] == pick
    model = tcs_reference(x, w, acc_scale=True)
    assert float((y.float() - model).norm() / model.norm()) < 5e-4
    xs = torch.zeros_like(x)
    with pdl.scope(1):
        quant_matmul(xs, w)  # warm (tuned already: the dict lookup)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ys = quant_matmul(xs, w)
    for seed in (1, 2):
        torch.manual_seed(seed)
        x2 = torch.randn(48, k, device="cuda", dtype=torch.float16)
        xs.copy_(x2)
        graph.replay()
        torch.cuda.synchronize()
        model = tcs_reference(x2, w, acc_scale=True)
        assert float((ys.float() - model).norm() / model.norm()) < 5e-4, seed


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("k", "n", "m"), [(4096, 12288, 64), (13824, 5120, 32), (4096, 11008, 100), (5120, 15360, 200)]
)
def test_shipped_tcsx_picks_pass_the_guard_and_match(monkeypatch: pytest.MonkeyPatch, k: int, n: int, m: int) -> None:
    """quant_matmul with the shipped H200 table at buckets that ship a tcsx pick (7B qkv M = 64, 13B down M = 32, 7B up
    M = 100 in bucket 128, 13B qkv M = 200 in bucket 256: a full and a partial 128-row block): the pick runs (a
    candidate, accepted by the guard) and matches tcs_reference."""
    from inlaid_worker.kernels import qmm_tuned
    from inlaid_worker.kernels import quant_matmul_config as qmc
    from inlaid_worker.kernels.quant_matmul import quant_matmul
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    monkeypatch.setenv("INLAID_QMM_TUNED", "1")
    monkeypatch.setattr(qmc, "_TUNED", {})
    torch.manual_seed(0)
    w, _ = _weight(k, n, False, False, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    shipped = qmm_tuned.shipped_pick(x.device, x.dtype, qmc.m_bucket(m), n, k, 4, 128)
    assert shipped is not None and shipped.kind in KINDS, shipped
    y = quant_matmul(x, w)
    assert qmc.LAST_PICK[0] == shipped
    model = tcs_reference(x, w, acc_scale=True)
    assert float((y.float() - model).norm() / model.norm()) < 5e-4
