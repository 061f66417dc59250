"""quant_tcsxk (session 19, issue 4; kind "tcsxk": quant_tcsx's PIPE 0 loop on a persistent stream-K grid). CPU: the
tuner offers it at bucket 256 only, the unit ranges cover every (tile, K tile) once and the sharer counts are
the owners', the launch plan and its refusals, the offline sm_90 build (no spills, each K loop's slot release after its
wgmma wait), the bench variant (bench/kernels/tcsxk_diag.py) at DIAG 0 / ORDER 1 compiling to the shipped PTX. On an sm_90 GPU (Gluon: no interpreter twin; quant_matmul runs quant_tc "tc" for it on the CPU, as for
tcsx): the kernel against tcs_reference(acc_scale=True) on grids that share tiles between 2-4 programs, one program
a tile, masked rows / columns, bf16, act-order, PDL, and many launches at 13B o M = 256.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from test_quant_tcs import _launch_twice_and_check, _weight

BENCH = Path(__file__).resolve().parents[3] / "bench" / "kernels"
KINDS = ("tcsxk", "tcsxks")  # shared tiles: read-and-clear atomics / fp32 slots


def test_tuner_offers_tcsxk_at_bucket_256_only() -> None:
    """Bucket 256 only (every M = 128 point lost, kernels-2026-12-01-s19-bigm.md); both kinds, split 1 (the grid is the
    programs), fp16 and bf16, 4-bit only, on sm_90 only, for K / group multiples of 128 and N % 4 == 0 (TMA)."""
    from inlaid_worker.kernels.quant_matmul_config import TCSXK_KINDS, TCSXK_PLANS, candidate_configs

    assert set(TCSXK_PLANS) == {256} and TCSXK_KINDS == KINDS

    def offered(m: int, n: int = 5120, k: int = 5120, bits: int = 4, **kw: object) -> list[str]:
        got = [c for c in candidate_configs(m, n, k, 128, bits, torch.float16, **kw) if c.kind in KINDS]
        assert all(c.split_k == 1 and c.block_k == 128 for c in got), got
        return sorted(c.kind for c in got)

    for m in (129, 200, 256):
        for k, n in ((4096, 22016), (5120, 5120), (11008, 4096)):
            assert offered(m, n, k) == sorted(KINDS), (m, k, n)
            bf16 = [c.kind for c in candidate_configs(m, n, k, 128, 4, torch.bfloat16) if c.kind in KINDS]
            assert sorted(bf16) == sorted(KINDS), (m, k, n)
    for m in (1, 16, 64, 65, 128, 257, 512):
        assert not offered(m), m
    assert not offered(256, bits=3) and not offered(256, hopper=False)
    assert not offered(256, n=5122) and not offered(256, k=5120 + 64), "TMA rows / whole K tiles"


@pytest.mark.parametrize(("units", "k_tiles", "programs"), [(3200, 40, 132), (11008, 32, 132), (1024, 32, 132),
                                                            (30, 10, 7), (30, 10, 3), (40, 40, 132), (86, 86, 2)])
def test_unit_ranges_cover_every_unit_once_and_sharers_are_the_owners(units: int, k_tiles: int, programs: int) -> None:
    from inlaid_worker.kernels.quant_tcsxk import owner, sharers, unit_range

    p = min(programs, units)
    seen = [q for q in range(p) for _ in range(*unit_range(q, units, p))]
    assert len(seen) == units and seen == sorted(seen)  # contiguous, in program order, each unit once
    assert all(owner(u, units, p) == seen[u] for u in range(units))
    for t in range(units // k_tiles):
        assert sharers(t, k_tiles, units, p) == len(set(seen[t * k_tiles:(t + 1) * k_tiles])), t
    if p == units // k_tiles:
        assert all(sharers(t, k_tiles, units, p) == 1 for t in range(p)), "one program a tile: direct stores"


def test_tcsxk_plan_and_refusals() -> None:
    from inlaid_worker.kernels.quant_tcsx import WIDE_REGS
    from inlaid_worker.kernels.quant_tcsxk import tcsxk_args, tcsxk_plan

    assert tcsxk_plan(256, 5120, 5120, 128, 2, 132) == (132, 3200, 40, 2)  # 80 tiles x 40 K tiles
    assert tcsxk_plan(100, 328, 1280, 128, 2, 10**6) == (30, 30, 10, 1), "P capped at the units"
    w, _ = _weight(1280, 328, False, False)
    x = torch.zeros(100, 1280, dtype=torch.float16)
    y = torch.empty(100, 328, dtype=torch.float16)
    grid, args, consts = tcsxk_args(x, w, 128, 3, 4, 2, y, WIDE_REGS)
    assert grid == (3,) and args[5] is y and args[6] is y, "one program a tile: no workspace"
    assert args[9:13] == (10, 30, 3, 1) and consts["CONS_REGS"] == WIDE_REGS[1]
    assert not {"DIAG", "ORDER"} & set(consts), "the ablations live in bench/kernels/tcsxk_diag.py"
    grid, args, _ = tcsxk_args(x, w, 128, 7, 4, 2, y, WIDE_REGS)
    assert grid == (7,) and args[5] is not y, "shared tiles: the read-and-clear workspace"
    _, args, consts = tcsxk_args(x, w, 128, 7, 4, 2, y, WIDE_REGS, slots=True)
    assert consts["SLOTS"] == 1 and args[5].numel() >= 3 * 100 * 328, "up to 3 contributors a tile (7 on 30 units)"
    for bad in (dict(block_m=32), dict(stages=6), dict(nwg=1)):
        kw = dict(block_m=128, stages=4, nwg=2) | bad
        with pytest.raises(ValueError, match="tcsxk"):
            tcsxk_args(x, w, kw["block_m"], 7, kw["stages"], kw["nwg"], y, WIDE_REGS)


def test_bench_diag_variant_takes_the_package_launch() -> None:
    """bench/kernels/tcsxk_diag.py (the ablations moved out of the package) builds on tcsxk_args: the same grid and
    arguments plus its DIAG / ORDER, and refuses unknown ones."""
    sys.path.insert(0, str(BENCH))
    from inlaid_worker.kernels.quant_tcsx import WIDE_REGS
    from inlaid_worker.kernels.quant_tcsxk import _tcsxk_kernel, tcsxk_args
    from tcsxk_diag import _tcsxk_diag_kernel, tcsxk_diag_args

    w, _ = _weight(1280, 328, False, False)
    x = torch.zeros(100, 1280, dtype=torch.float16)
    y = torch.empty(100, 328, dtype=torch.float16)
    grid, args, consts = tcsxk_args(x, w, 128, 3, 4, 2, y, WIDE_REGS, slots=True)
    dgrid, dargs, dconsts = tcsxk_diag_args(x, w, 128, 3, 4, 2, y, WIDE_REGS, 2, True, 0)
    assert dgrid == grid and dargs[2:] == args[2:] and dconsts == dict(consts, DIAG=2, ORDER=0)
    assert _tcsxk_diag_kernel.arg_names == [*_tcsxk_kernel.arg_names[:-1], "DIAG", "SLOTS", "ORDER"]
    for bad in (dict(diag=5), dict(order=2)):
        with pytest.raises(ValueError, match="tcsxk"):
            tcsxk_diag_args(x, w, 128, 7, 4, 2, y, WIDE_REGS, **bad)


def test_tcsxk_workspace_is_sized_by_the_m_bucket() -> None:
    """Every M of a bucket asks for the same workspace (decode graphs keep each captured buffer alive, so growing it a
    decode bucket at a time would pin one per size), never less than M's own need; M itself above bucket 512."""
    from inlaid_worker.kernels.quant_tcsxk import tcsxk_plan, tcsxk_workspace

    for n, k in ((27648, 5120), (5120, 13824)):  # the shipped picks: 13B gate/up (slots), 13B down (atomics)
        for slots in (False, True):
            for ms, bucket in (((129, 160, 200, 256), 256), ((65, 100, 128), 128)):
                sizes = {m: tcsxk_workspace(m, n, k, 128, 2, 132, slots) for m in ms}
                assert len(set(sizes.values())) == 1, (n, k, slots, sizes)
                p, units, kt, _ = tcsxk_plan(ms[0], n, k, 128, 2, 132)
                planes = min(p, -(-kt * p // units) + 1) if slots else 1
                assert sizes[ms[0]] == (planes * bucket * n, 2 * units // kt), (n, k, slots)
    assert tcsxk_workspace(256, 27648, 5120, 128, 2, 132, True)[0] == 2 * 256 * 27648, "2 contributors a tile"
    assert tcsxk_workspace(600, 5120, 5120, 128, 2, 132, False)[0] == 600 * 5120, "above bucket 512: M itself"
    assert tcsxk_workspace(100, 328, 1280, 128, 2, 3, True) == (0, 0), "one program a tile: no workspace"


def test_tcsxk_args_share_one_workspace_across_a_bucket() -> None:
    """tcsxk_args at M = 129, 160, 200, 256 in turn (a decode graph capture per bucket) reuses one buffer of each
    kind: no call replaces the one an earlier call got."""
    from inlaid_worker.kernels.quant_tcsx import WIDE_REGS
    from inlaid_worker.kernels.quant_tcsxk import tcsxk_args
    from kernel_buffers import fresh_workspaces

    w, _ = _weight(1280, 328, False, False)
    with fresh_workspaces(torch.device("cpu")):
        for slots in (False, True):
            bufs = []
            for m in (129, 160, 200, 256):
                x = torch.zeros(m, 1280, dtype=torch.float16)
                _, args, _ = tcsxk_args(x, w, 128, 7, 4, 2, torch.empty(m, 328, dtype=torch.float16), WIDE_REGS,
                                        slots=slots)  # fmt: skip
                bufs.append((args[5], args[6]))
            assert all(ws is bufs[0][0] and c is bufs[0][1] for ws, c in bufs), slots


def test_tcsxk_builds_offline() -> None:
    """sm_90 build at block_m 128, 4 stages, two warpgroups, slot fix-ups (Triton's ptxas, no GPU): no ptxas warning
    (wgmma serialization), no local memory in the consumer K loop (8 wgmmas a K tile; the fix-up path after it spills
    ~230 bytes: once a tile segment), shared memory within tcsx_smem_bytes, both consumer K loops release a slot only
    after a wgmma wait."""
    sys.path.insert(0, str(BENCH))
    from inlaid_worker.kernels.quant_tcsx import tcsx_smem_bytes
    from s19_bigm_sass import build
    from sass_tcl import analyse
    from sass_tcs import loop_mix
    from tcs_ptx_order import early_releases, k_loops

    asm = build(128, 4, 2, slots=1)
    res = analyse(asm)
    assert not res["warnings"] and res["spill_stores"] <= 512, res
    mix = loop_mix(asm)
    assert mix and all(v["mix"].get("HGMMA") == 8 and not {"LDL", "STL"} & set(v["mix"]) for v in mix.values()), mix
    assert asm["shared_bytes"] <= tcsx_smem_bytes(4, 128, 2)
    loops = k_loops(asm["ptx"])
    assert len(loops) == 2 and [early_releases(lp) for lp in loops] == [0, 0]


def _ptx_code(ptx: str) -> str:
    """The PTX's code: no debug sections, .loc / .file lines or comments, the entry's name replaced by KERNEL."""
    names = re.findall(r"\.entry\s+(\w+)\s*\(", ptx)
    assert len(names) == 1, names
    ptx = re.sub(r"\.section\s+\.debug_\w+\s*\{[^}]*\}", "", ptx)
    lines = (re.sub(r"//.*", "", line).strip() for line in ptx.splitlines())
    code = "\n".join(ln for ln in lines if ln and not ln.startswith((".loc", ".file")))
    return code.replace(names[0], "KERNEL")


def test_bench_diag_variant_compiles_to_the_shipped_ptx() -> None:
    """The bench variant (tcsxk_diag.py; s19_bigm.py's "o1" rows stand in for the shipped kernel with it) at DIAG 0 /
    ORDER 1 builds to the shipped kernel's sm_90a PTX but for the entry's name, line info and debug sections. PDL mode
    2 (the late launch after the K loop and the waits after the prefetch: the duplicated producer and consumer) and
    slot fix-ups on; DIAG 2 (the ring alone) differs: the comparison sees the loop."""
    sys.path.insert(0, str(BENCH))
    from s19_bigm_sass import build

    cfg = dict(bm=128, stages=4, nwg=2, gdc=2, slots=1)
    shipped, variant = build(**cfg)["ptx"], build(**cfg, variant=True)["ptx"]
    assert ".entry _tcsxk_kernel(" in shipped and ".entry _tcsxk_diag_kernel(" in variant and shipped != variant
    code = _ptx_code(shipped)
    assert "wgmma.mma_async" in code and "griddepcontrol" in code and ".debug_" not in code and "_tcsxk" not in code
    assert _ptx_code(variant) == code
    ring = _ptx_code(build(**cfg, diag=2)["ptx"])
    assert ring != code and "wgmma.mma_async" not in ring


# ----------------------------------------------------------------------------------------------------------- GPU
GPU_CASES = [  # m, k, n, stages, programs (0: one an SM), dtype, sym, act, use_pdl, slots
    (256, 1280, 640, 4, 7, torch.float16, False, False, 0, False),  # 10 tiles x 10 K tiles on 7: shared tiles
    (256, 1280, 640, 4, 7, torch.float16, False, False, 1, True),
    (200, 1280, 328, 4, 4, torch.float16, True, True, 1, False),  # masked rows and columns, up to 3 a tile
    (200, 1280, 328, 4, 4, torch.float16, True, True, 0, True),
    (128, 4096, 1408, 5, 0, torch.float16, False, False, 1, True),  # one an SM (132 > 11 x 32 / 3)
    (256, 1280, 384, 4, 6, torch.float16, False, False, 0, False),  # one program a tile: direct stores only
    (100, 1280, 384, 4, 5, torch.bfloat16, False, True, 1, True),
    (256, 11008, 512, 4, 0, torch.float16, False, False, 0, False),  # 86 K tiles
]


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("m", "k", "n", "stages", "programs", "dtype", "sym", "act", "use_pdl", "slots"),
                         GPU_CASES)  # fmt: skip
def test_tcsxk_matches_reference(m: int, k: int, n: int, stages: int, programs: int, dtype: torch.dtype, sym: bool,
                                 act: bool, use_pdl: int, slots: bool) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_tcsx import launch_tcsxk, tcsx_permute

    _launch_twice_and_check(lambda x, w, y: launch_tcsxk(tcsx_permute(x, w), w, 128, 1, stages, 2, y,
                                                         programs=programs, slots=slots), m, k, n, sym, act, dtype,
                            use_pdl, 4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
def test_tcsxk_through_the_dispatcher_and_many_launches_at_13b_o() -> None:
    """13B o (5120 x 5120) at M = 256 through quant_matmul's dispatcher (pre-pass + kernel), 12 launches against
    tcs_reference(acc_scale=True): every one right (a fix-up race would show as some launches off)."""
    from inlaid_worker.kernels import quant_common, quant_tcw
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    w, _ = _weight(5120, 5120, False, False, "cuda")
    x = torch.randn(256, 5120, device="cuda", dtype=torch.float16)
    model = tcs_reference(x, w, acc_scale=True)
    y = torch.empty(256, 5120, device="cuda", dtype=torch.float16)
    for kind in KINDS:
        errs = []
        for _ in range(12):
            y.fill_(float("nan"))
            launch_quant_matmul(x, w, QMMConfig(128, 128, 128, 1, 4, 4, True, kind), y)
            errs.append(float((y.float() - model).norm() / model.norm()))
        assert all(e < 5e-4 for e in errs), (kind, errs)
    torch.cuda.synchronize()
    assert all(bool((ws == 0).all()) and bool((c == 0).all()) for ws, c in quant_common._WORKSPACES.values())
    assert all(bool((c == 0).all()) for _, c in quant_tcw._SLOT_WS.values()), "slot counters left non-zero"
