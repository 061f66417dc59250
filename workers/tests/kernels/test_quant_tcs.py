"""quant_tcs (small-M warp-specialized Gluon GEMV with a TMA word ring, kinds tcs / tcss / tcs2 / tcsa / tcs2a):
host-side launch logic, the torch reference, the offline sm_90 build (and its ring-slot release order in the PTX) and
the dispatcher's interpreter twins on the CPU; the kernel against the dequantized fp32 product on CUDA (sm_90; skipped
elsewhere)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from cases import ON_SM90
from gptq_weight import gptq_weight as _weight
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.kernels.quant_matmul_config import TCS_ACC_KINDS, TCS_KINDS, QMMConfig


def _random_weight(k: int, n: int) -> GPTQWeight:
    """A 4-bit g128 weight of random words and zeros (no act-order), fp16 scales in [0.001, 0.011), on CUDA."""
    qw = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, device="cuda")
    qz = torch.randint(-(2**31), 2**31 - 1, (k // 128, n // 8), dtype=torch.int32, device="cuda")
    sc = (torch.rand(k // 128, n, device="cuda") * 0.01 + 0.001).half()
    return GPTQWeight(qw, qz, sc, None, 4, 128, False, 1, k, n)


def _launch_twice_and_check(launch: Callable[[torch.Tensor, GPTQWeight, torch.Tensor], None], m: int, k: int, n: int,
                            sym: bool, act: bool, dtype: torch.dtype, use_pdl: int, ref_tol: float,
                            acc_scale: bool) -> None:  # fmt: skip
    """`launch(x, w, y)` twice (the workspace and counters are reused by the second call) under pdl.scope(use_pdl)
    on seeded x [m, k] and weight: y against the fp32 dequantized product (relative error under ref_tol) and against
    tcs_reference(acc_scale) (4e-3 bf16, 5e-4 fp16); the read-and-clear workspace and the slot counters left zero."""
    from inlaid_worker.kernels import pdl, quant_common, quant_tcw
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    w, ref_w = _weight(k, n, sym, act, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = x.float() @ ref_w
    y = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
    with pdl.scope(use_pdl):
        for _ in range(2):
            launch(x, w, y)
    torch.cuda.synchronize()
    err = float((y.float() - ref).norm() / ref.norm())
    assert err < ref_tol, f"rel err {err:.2e}"
    model = tcs_reference(x, w, acc_scale=acc_scale)
    assert float((y.float() - model).norm() / model.norm()) < (4e-3 if dtype == torch.bfloat16 else 5e-4)
    for ws, cnt in quant_common._WORKSPACES.values():
        assert bool((ws == 0).all()) and bool((cnt == 0).all()), "read-and-clear workspace left clean"
    for _, cnt in quant_tcw._SLOT_WS.values():
        assert bool((cnt == 0).all()), "slot counters left zeroed"


def test_tcs_args_grid_split_and_workspace() -> None:
    from inlaid_worker.kernels.quant_tcs import tcs_args

    k, n, m = 1280, 328, 13  # 10 K tiles, N not a multiple of the tile, M past one 8-row block
    w, _ = _weight(k, n, False, False)
    x = torch.zeros(m, k, dtype=torch.float16)
    y = torch.empty(m, n, dtype=torch.float16)
    grid, args, consts = tcs_args(x, w, 8, 3, 6, 2, y)
    assert grid == (3, 3, 2), "128-column tiles (2 warpgroups), 3 K splits of 4 / 4 / 2 tiles, 2 row blocks"
    assert args[11] == 3 and consts["ITERS"] == 4 and consts["USE_SPLIT"] and not consts["SLOTS"]
    assert consts["NWG"] == 2 and consts["STAGES"] == 6 and consts["BLOCK_M"] == 8 and not consts["HAS_PERM"]
    wd = args[0]
    assert list(wd.block_shape) == [16, 128] and wd.base is w.qweight
    assert args[7].numel() >= 2 * grid[0] * grid[2], "one arrival counter per warpgroup tile"
    assert bool((args[6] == 0).all()), "read-and-clear workspace starts clean"
    _, args_s, consts_s = tcs_args(x, w, 16, 3, 4, 1, y, slots=True)
    assert consts_s["SLOTS"] and args_s[6].numel() >= 3 * m * n, "one fp32 slot per split"
    grid1, args1, consts1 = tcs_args(x, w, 16, 1, 4, 1, y)
    assert grid1 == (6, 1, 1) and not consts1["USE_SPLIT"] and args1[6] is y, "no workspace without split-K"


def test_tcs_refuses_what_it_cannot_run() -> None:
    from inlaid_worker.kernels.quant_tcs import fits, tcs_args, tcs_supported

    w, _ = _weight(256, 128, False, False)
    assert tcs_supported(w, 256)
    assert not tcs_supported(dataclasses.replace(w, bits=3), 256), "4-bit only"
    kmajor = dataclasses.replace(w, qweight=w.qweight.t().contiguous().t())
    assert not tcs_supported(kmajor, 256), "TMA needs N-contiguous words"
    x = torch.zeros(8, 256, dtype=torch.float16)
    y = torch.empty(8, 128, dtype=torch.float16)
    for bad in ((128, 1, 4, 1), (24, 1, 4, 1), (8, 1, 1, 1), (8, 1, 4, 3)):  # block_m, split, stages, warpgroups
        with pytest.raises(ValueError):
            tcs_args(x, w, *bad, y)
    assert fits(4096, 16, 3, 6, 2) and not fits(11008, 16, 1, 8, 2), "86 staged x tiles do not fit"


@pytest.mark.parametrize(("sym", "act"), [(False, False), (True, True)])
def test_tcs_reference_is_the_dequantized_product(sym: bool, act: bool) -> None:
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    w, ref_w = _weight(384, 96, sym, act)
    x = torch.randn(5, 384).half()
    ref = x.float() @ ref_w
    y = tcs_reference(x, w)
    assert float((y - ref).norm() / ref.norm()) < 2e-3, "the 16-bit (q - z) * s operand: half-precision rounding only"


def test_tcs_acc_scale_reference_is_closer_to_the_dequantized_product() -> None:
    """Kinds tcsa / tcs2a (ACC_SCALE): the exact (q - z) operand with each K tile's product scaled in fp32 is the
    dequantized product up to fp32 summation, closer than the 16-bit (q - z) * s operand of tcs."""
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    for sym, act in ((False, False), (True, True)):
        w, ref_w = _weight(384, 96, sym, act)
        x = torch.randn(5, 384).half()
        ref = x.float() @ ref_w
        err_acc = float((tcs_reference(x, w, acc_scale=True) - ref).norm() / ref.norm())
        err_op = float((tcs_reference(x, w) - ref).norm() / ref.norm())
        assert err_acc < 1e-5 < err_op, (err_acc, err_op)


def test_tcs_reference_rounds_the_scale_to_x_dtype() -> None:
    """The kernel stages the group scales in x's 16-bit type (bf16 x: s2.to(bfloat16)) before the ACC_SCALE fp32
    multiply (and the operand's), so the model does too: with bf16 x it equals the model of a weight whose fp16 scales
    were rounded to bf16 beforehand (exact in fp16), and differs from the unrounded one; with fp16 x nothing rounds."""
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    torch.manual_seed(0)
    w, _ = _weight(384, 96, False, True)
    w_b = dataclasses.replace(w, scales=w.scales.bfloat16().half())  # bf16 values, exact in fp16
    assert not torch.equal(w_b.scales, w.scales)
    x = torch.randn(5, 384)
    for acc in (True, False):
        xb, xh = x.bfloat16(), x.half()
        assert torch.equal(tcs_reference(xb, w, acc_scale=acc), tcs_reference(xb, w_b, acc_scale=acc)), acc
        assert not torch.equal(tcs_reference(xh, w, acc_scale=acc), tcs_reference(xh, w_b, acc_scale=acc)), acc


def test_tcs_acc_scale_builds_with_fewer_instructions_offline() -> None:
    """ACC_SCALE (kinds tcsa / tcs2a, session 13): the consumer K loop drops the operand's 32 HMUL2 a tile (the scale
    goes onto the fp32 accumulator, 4 FFMA for 8 rows) and, in fp16, 2 of every 3 shifts (the odd nibbles keep their
    place and one fma by 1/16 removes magic and zero); no spills, no wgmma serialization, both dtypes, 1-2 warpgroups
    (bench/kernels/sass_tcs.py; s13_tcs_sass.py is its CLI)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from sass_tcl import analyse
    from sass_tcs import build, loop_mix

    base = loop_mix(build(8, 4, 2, 11, 3, early=1))  # session 12's tcs (tcs0: early release)
    for pipe, bf16, nwg, bm in ((0, 0, 2, 8), (1, 0, 2, 16), (0, 1, 1, 8)):
        asm = build(bm, 4, nwg, 11, 3, pipe=pipe, acc=1, bf16=bf16)
        res = analyse(asm)
        assert res["spill_stores"] == 0 and not [w for w in res["warnings"] if "C7512" in w], res
        mix = loop_mix(asm)
        assert len(mix) == nwg + 1, mix  # one K loop a consumer warpgroup (+ the epilogue's loop)
        loop = mix["kloop0"]
        assert loop["mix"].get("HMUL2", 0) == 0 and loop["mix"].get("FFMA", 0) == bm // 2, loop
        assert loop["mix"]["HGMMA"] == 8 and loop["n"] < base["kloop0"]["n"] - (25 if pipe == 0 else 10), loop
    assert base["kloop0"]["mix"]["HMUL2"] == 32


def test_tcs_builds_for_sm90_offline() -> None:
    """The sm_90 build (Triton's ptxas, no GPU): producer (24 registers) and two consumer warpgroups, TMA copies, one
    wgmma a K tile, no local memory (bench/kernels/sass_tcs.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from sass_tcl import analyse
    from sass_tcs import build  # ACC_SCALE = EARLY_RELEASE = 0 specialised (else runtime arguments)

    asm = build(16, 6, 2, 11, 1)
    ptx = asm["ptx"]
    assert "setmaxnreg.dec.sync.aligned.u32 \t24;" in ptx and ptx.count("cp.async.bulk.tensor") >= 1
    assert ptx.count("wgmma.mma_async") == 16, "one 64x16x128 wgmma (8 instructions) per consumer warpgroup"
    res = analyse(asm)
    assert res["spill_stores"] == 0 and res["smem"] <= 200 * 1024, res


def test_tcs2_builds_without_wgmma_serialization() -> None:
    """Kind tcs2 (PIPE): the half-tile wgmmas stay asynchronous (ptxas would otherwise serialize them, C7512, as it
    did for a variant that carried a wgmma in flight across K tiles), no spills, no thread barrier of ours in the K
    loop (bench/kernels/sass_tcs.py)."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from sass_tcl import BIN, analyse
    from sass_tcs import build

    asm = build(8, 4, 2, 11, 1, pipe=1)  # split-K on, PIPE = 1
    ptx = asm["ptx"]
    assert ptx.count("wgmma.mma_async") == 16 and ptx.count("wgmma.commit_group") == 4, "two K=64 halves a warpgroup"
    with tempfile.NamedTemporaryFile(suffix=".ptx", mode="w") as f:
        f.write(ptx)
        f.flush()
        info = subprocess.run([os.path.join(BIN, "ptxas"), "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"],
                              capture_output=True, text=True).stderr  # fmt: skip
    assert "C7512" not in info, info
    res = analyse(asm)
    assert res["spill_stores"] == 0 and res["smem"] <= 200 * 1024, res


def test_tcs_release_follows_the_wgmma_wait_in_the_ptx() -> None:
    """The race fix, offline (sm_90 PTX built on the CPU, no GPU): in every consumer K loop no slot release
    (mbarrier.arrive on `empty`) comes after the slot's ld.shared reads and before a wgmma.wait_group, for tcs, tcsa,
    tcs2 and tcs2a with one and two warpgroups, block_m 8 / 16, fp16 / bf16; session 12's early release (bench kind
    tcs0) has one a loop, so the check can fail (tcs_ptx_order.py; 8 builds, ~0.5-1 s each)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from sass_tcs import build
    from tcs_ptx_order import early_releases, k_loops

    cases: dict[str, tuple[tuple[int, ...], dict[str, int]]] = {  # (bm, stages, nwg, iters, split), switches
        "tcs 2wg": ((16, 4, 2, 11, 3), {}),
        "tcs 1wg": ((16, 4, 1, 11, 3), {}),
        "tcsa 2wg": ((16, 4, 2, 11, 3), {"acc": 1}),
        "tcsa 1wg bf16": ((8, 4, 1, 11, 3), {"acc": 1, "bf16": 1}),
        "tcs2 2wg": ((8, 4, 2, 11, 3), {"pipe": 1}),
        "tcs2a 2wg": ((16, 4, 2, 11, 3), {"pipe": 1, "acc": 1}),
        "tcs2a 1wg": ((8, 4, 1, 11, 3), {"pipe": 1, "acc": 1}),
        "tcs0 2wg": ((8, 4, 2, 11, 3), {"early": 1}),  # the same build as the ACC_SCALE test's baseline
    }
    for name, (cfg, switches) in cases.items():
        loops = k_loops(build(*cfg, **switches)["ptx"])
        nwg = cfg[2]
        assert len(loops) == nwg, (name, len(loops))  # one K loop a consumer warpgroup
        early = [early_releases(loop) for loop in loops]
        assert early == ([1] * nwg if name.startswith("tcs0") else [0] * nwg), (name, early)


_TWIN_SCRIPT = """
import json, torch
from cases import _patch_interpreter_for_numpy, make_gptq
_patch_interpreter_for_numpy()
from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference
from inlaid_worker.kernels.quant_matmul_config import TCS_KINDS, QMMConfig
from inlaid_worker.kernels.quant_tcs import tcs_reference
torch.manual_seed(0)
raw = make_gptq(384, 64, 4, 128, sym=False, act=True, zero_offset=1)
w = prepare_gptq_weight(**raw, bits=4, group_size=128, sym=False)
x = torch.randn(5, 384).half()
models = [tcs_reference(x, w, acc_scale=a).half() for a in (False, True)]
ref = quant_matmul_reference(x, raw['qweight'], raw['qzeros'], raw['scales'], raw['g_idx'], 4, 1).float()
out = {}
for kind in TCS_KINDS:
    y = torch.empty(5, 64, dtype=torch.float16)
    launch_quant_matmul(x, w, QMMConfig(8, 128, 128, 2, 4, 4, True, kind), y)
    out[kind] = dict(same=[float((y == m).float().mean()) for m in models],
                     err=float((y.float() - ref).norm() / ref.norm()))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def twin_results() -> dict:
    """kind -> its launch_quant_matmul output (act-order, split-K 2, 3 K tiles; a 5 x 384 fp16 x) compared with the
    reference and with both tcs_reference models: one subprocess under TRITON_INTERPRET=1 for the two tests below."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{here.parents[1]}{os.pathsep}{here}")
    proc = subprocess.run([sys.executable, "-c", _TWIN_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dispatch_under_the_interpreter_matches_the_reference(twin_results: dict) -> None:
    """On the CPU the kinds run quant_tc: "tcf" (the same (q - z) * s operand) for tcs / tcss / tcs2, "tc" (exact
    q - z, fp32 tile scaling) for the ACC_SCALE kinds tcsa / tcs2a: the dispatcher's path, each within 2e-3 (relative
    norm) of quant_matmul_reference (the twin subprocess's run; it was a 3 x 256 x of its own, 2 K tiles)."""
    assert set(twin_results) == set(TCS_KINDS), twin_results
    for kind, res in twin_results.items():
        assert res["err"] < 2e-3, (kind, res)


def test_dispatch_twins_have_each_kinds_numerics(twin_results: dict) -> None:
    """The interpreter twin of each kind computes that kind's numerics, element by element in fp16: the ACC_SCALE
    kinds (twin quant_tc "tc") equal tcs_reference(acc_scale=True), the others (twin "tcf") tcs_reference(); each
    model agrees with the other kind's twin on only ~65% of the elements (the 16-bit (q - z) * s operand rounds), so a
    twin of the wrong numerics fails (act-order, split-K 2, 3 K tiles; a subprocess under TRITON_INTERPRET=1)."""
    assert set(twin_results) == set(TCS_KINDS), twin_results  # every kind checked (an empty result fails)
    for kind, res in twin_results.items():  # [equal to the operand model, to the acc model]
        op, acc = res["same"]
        own, other = (acc, op) if kind in TCS_ACC_KINDS else (op, acc)
        assert own >= 0.97 and other < 0.9, (kind, twin_results)


def test_tcs_candidates_fit() -> None:
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs
    from inlaid_worker.kernels.quant_tcs import fits

    checked = 0
    for m in (1, 2, 4, 8, 16):
        for k, n in ((4096, 11008), (11008, 4096)):
            for c in (c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind.startswith("tcs")):
                assert c.block_n in (64, 128) and c.block_m in (8, 16) and c.block_m >= min(m, 8)
                assert fits(k, c.block_m, c.split_k, c.num_stages, c.block_n // 64), c
                checked += 1
    assert checked  # the tuner offers tcs candidates at these shapes (the loop checked something)
    assert not [c for c in candidate_configs(8, 11008, 4096, 128, 3, torch.float16) if c.kind.startswith("tcs")]


def test_the_tuner_offers_the_plans_that_fit_and_the_estimate_covers_the_build() -> None:
    """quant_matmul_config.tcs_smem_bytes (quant_tcs's own, re-exported there) bounds the compiled kernel's shared
    memory at the largest program the tuner offers (block_m 8, 59 K tiles: 203,072 compiled bytes, offline sm_90
    build), and _tcs offers exactly the plans that fit (review of session 12)."""
    import sys
    from pathlib import Path

    from inlaid_worker.kernels import quant_tcs
    from inlaid_worker.kernels.quant_matmul_config import (
        TCS_PLANS,
        TCS_SMEM_MAX,
        TCS_SZ_TMA_KINDS,
        _tcs,
        tcs_smem_bytes,
    )

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from sass_tcs import build

    assert build(8, 4, 2, 59, split=1, pipe=1, acc=1)["shared_bytes"] <= tcs_smem_bytes(59, 4, 8, 2) <= TCS_SMEM_MAX
    # SZ_MODE 2 (tcsat) at its largest offered program (block_m 8, 43 K tiles: 7B down split 2) and a 1-tile one
    for iters in (43, 1):
        assert build(8, 4, 2, iters, split=1, acc=1, sz=2)["shared_bytes"] <= tcs_smem_bytes(iters, 4, 8, 2, True)
    assert tcs_smem_bytes(43, 4, 8, 2, True) <= TCS_SMEM_MAX < tcs_smem_bytes(59, 4, 8, 2, True)
    for k in (128, 640, 1280, 4096, 5120, 11008, 13824, 20480):
        for mb in (2, 4, 8, 16):
            offered = {(c.block_m, c.block_n, c.split_k, c.num_stages, c.kind) for c in _tcs(mb, 4096, k, 128)}
            for bm, bn, split, st, kind in offered:
                assert quant_tcs.fits(k, bm, split, st, bn // 64, kind in TCS_SZ_TMA_KINDS), (k, mb, split, kind)
            bm = 8 if mb <= 8 else 16
            for bn, st, kind, splits in TCS_PLANS[mb]:  # every split the plans name (2 / 3 / 4 / 8)
                for split in splits:
                    if quant_tcs.fits(k, bm, split, st, bn // 64, kind in TCS_SZ_TMA_KINDS):
                        assert (bm, bn, split, st, kind) in offered, (k, mb, split, kind)
    assert {c.kind for c in _tcs(4, 4096, 4096, 128)} == {"tcs2a", "tcsat"}
    assert {c.kind for c in _tcs(4, 4004, 4096, 128)} == {"tcs2a"}, "SZ_MODE 2 needs N % 32 == 0"
    assert {c.kind for c in _tcs(4, 4096, 4096, 256)} == {"tcs2a"}, "SZ_MODE 2 needs g128"


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("kind", "bm", "bn", "stages", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
    [
        ("tcs", 8, 128, 6, 1, 3, False, False, torch.float16, 1280, 328, 0),  # N past the tile, short last split
        ("tcs", 8, 64, 8, 5, 2, False, False, torch.float16, 640, 256, 1),  # rows past M, odd splits, PDL
        ("tcs", 16, 128, 4, 16, 1, True, True, torch.float16, 1024, 384, 0),  # sym + act-order, no split
        ("tcs", 16, 64, 4, 13, 4, False, True, torch.bfloat16, 1280, 328, 1),
        ("tcs", 8, 128, 3, 8, 4, True, False, torch.bfloat16, 1536, 512, 0),
        ("tcss", 16, 128, 6, 11, 3, False, False, torch.float16, 1280, 384, 1),
        ("tcss", 8, 64, 4, 2, 5, False, True, torch.float16, 1280, 328, 0),
        ("tcs", 16, 128, 6, 16, 8, False, False, torch.float16, 11008, 512, 1),  # 7B down's K, 11 tiles a split
        # tcs2: the barrier-free K loop with half-tile wgmmas (PIPE)
        ("tcs2", 8, 128, 6, 1, 3, False, False, torch.float16, 1280, 328, 0),
        ("tcs2", 8, 64, 8, 5, 2, False, False, torch.float16, 640, 256, 1),
        ("tcs2", 16, 128, 4, 16, 1, True, True, torch.float16, 1024, 384, 0),
        ("tcs2", 16, 64, 4, 13, 4, False, True, torch.bfloat16, 1280, 328, 1),
        ("tcs2", 8, 128, 2, 8, 4, True, False, torch.bfloat16, 1536, 512, 0),  # 2 stages: every slot reused
        ("tcs2", 16, 128, 4, 16, 8, False, False, torch.float16, 11008, 512, 1),
        # tcs2a (ACC_SCALE + PIPE, the shipped kind) through quant_matmul's dispatcher
        ("tcs2a", 8, 128, 4, 4, 3, False, False, torch.float16, 4096, 512, 1),  # the shipped 7B up plan's split
        ("tcs2a", 16, 128, 4, 13, 4, True, True, torch.float16, 1280, 328, 0),  # sym + act-order, N past the tile
        ("tcs2a", 8, 64, 2, 8, 2, False, True, torch.bfloat16, 1536, 512, 1),  # one warpgroup, every slot reused
    ],
)
def test_tcs_matches_reference(kind: str, bm: int, bn: int, stages: int, m: int, split: int, sym: bool, act: bool,
                               dtype: torch.dtype, k: int, n: int, use_pdl: int) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    cfg = QMMConfig(bm, bn, 128, split, 4, stages, True, kind)
    _launch_twice_and_check(lambda x, w, y: launch_quant_matmul(x, w, cfg, y), m, k, n, sym, act, dtype, use_pdl,
                            5e-3 if dtype == torch.bfloat16 else 1e-3, kind in TCS_ACC_KINDS)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("kind", "bm", "bn", "stages", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
    [
        ("tcsa", 8, 128, 6, 1, 3, False, False, torch.float16, 1280, 328, 0),  # N past the tile, short last split
        ("tcsa", 8, 64, 8, 5, 2, False, False, torch.float16, 640, 256, 1),  # rows past M, one warpgroup, PDL
        ("tcsa", 16, 128, 4, 16, 1, True, True, torch.float16, 1024, 384, 0),  # sym + act-order, no split
        ("tcsa", 16, 64, 4, 13, 4, False, True, torch.bfloat16, 1280, 328, 1),
        ("tcsa", 8, 128, 2, 8, 4, True, False, torch.bfloat16, 1536, 512, 0),  # 2 stages: every slot reused
        ("tcsa", 16, 128, 4, 16, 8, False, False, torch.float16, 11008, 512, 1),  # 7B down's K, 11 tiles a split
        ("tcs2a", 8, 128, 6, 1, 3, False, False, torch.float16, 1280, 328, 0),
        ("tcs2a", 16, 128, 4, 16, 1, True, True, torch.float16, 1024, 384, 1),
        ("tcs2a", 16, 64, 4, 13, 4, False, True, torch.bfloat16, 1280, 328, 1),
        ("tcs2a", 8, 128, 4, 8, 8, False, False, torch.float16, 11008, 512, 0),
        ("tcsa", 16, 128, 4, 16, 4, False, False, torch.float16, 4096, 1408, 1),
        ("tcsa", 8, 128, 4, 3, 1, False, False, torch.float16, 1280, 328, 0),  # no split: plain stores
    ],
)
def test_tcs_acc_scale_matches_reference(kind: str, bm: int, bn: int, stages: int, m: int, split: int, sym: bool,
                                         act: bool, dtype: torch.dtype, k: int, n: int,
                                         use_pdl: int) -> None:  # fmt: skip
    """Kinds tcsa / tcs2a (ACC_SCALE, session 13; quant_tcs.launch_tcs directly, the dispatcher's path is in
    test_tcs_matches_reference): against the fp32 dequantized product (tighter than tcs for fp16: no 16-bit rounding
    of the weights; bf16 x rounds the scales to bf16) and the acc_scale model."""
    from inlaid_worker.kernels.quant_tcs import launch_tcs

    _launch_twice_and_check(lambda x, w, y: launch_tcs(x, w, bm, split, stages, bn // 64, y, kind), m, k, n, sym, act,
                            dtype, use_pdl, 4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize("kind", ["tcsa", "tcs2a"])
def test_tcs_acc_scale_repeated_launches(kind: str) -> None:
    """7B up (4096 x 11008), n128 split 3 (the shipped tcs plan): 8 x 2 back-to-back launches, PDL off and on, each
    result against the acc_scale model and the workspace zero after every pair."""
    from inlaid_worker.kernels import pdl, quant_common
    from inlaid_worker.kernels.quant_tcs import launch_tcs, tcs_reference

    torch.manual_seed(0)
    k, n = 4096, 11008
    w = _random_weight(k, n)
    x = torch.randn(4, k, device="cuda").half()
    ref = tcs_reference(x, w, acc_scale=True)
    for mode in (0, 1):
        for _ in range(8):
            y = torch.full((4, n), float("nan"), device="cuda", dtype=torch.float16)
            with pdl.scope(mode):
                launch_tcs(x, w, 8, 3, 4, 2, y, kind)
                launch_tcs(x, w, 8, 3, 4, 2, y, kind)
            torch.cuda.synchronize()
            assert float((y.float() - ref).norm() / ref.norm()) < 5e-4
            for ws, cnt in quant_common._WORKSPACES.values():
                assert bool((ws == 0).all()) and bool((cnt == 0).all()), f"workspace left dirty (PDL mode {mode})"


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize("kind", ["tcs", "tcsa", "tcs2a", "tcsat", "tcs2at"])
def test_tcs_block_m16_gate_up_launches_are_all_right(kind: str) -> None:
    """The shipped 7B gate/up M = 16 plan (4096 x 22016, block_m 16, n128, split 3, 4 stages): 16 single launches, each
    against the model. Session 12's tcs released a ring slot right after reading it, before the wgmma that used the
    words, and got 11 of 40 such launches wrong (one warp's 16 columns of a tile, errors 1e-3 .. 6e-3; s13_tcs_diag.py);
    the slot now goes back after that wgmma (all 0 of 40 with the release after the wait)."""
    from inlaid_worker.kernels.quant_tcs import launch_tcs, tcs_reference

    torch.manual_seed(0)
    k, n, m = 4096, 22016, 16
    w = _random_weight(k, n)
    x = torch.randn(m, k, device="cuda").half()
    ref = tcs_reference(x, w, acc_scale=kind != "tcs")
    errs = []
    for _ in range(16):
        y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
        launch_tcs(x, w, 16, 3, 4, 2, y, kind)
        torch.cuda.synchronize()
        errs.append(float((y.float() - ref).norm() / ref.norm()))
    assert max(errs) < 5e-4, errs


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("bn", "split", "stages", "kind"),
                         [(64, 3, 4, "tcs"), (128, 6, 4, "tcs"), (128, 3, 4, "tcs"), (128, 3, 4, "tcs2"),
                          (64, 3, 4, "tcs2")])  # fmt: skip
def test_tcs_repeated_launches_leave_the_workspace_clean(bn: int, split: int, stages: int, kind: str) -> None:
    """7B up (4096 x 11008) with more programs than one wave for the first two: back-to-back launches, PDL off and on,
    each result right and the read-and-clear workspace zero after every pair (one warpgroup, split 3, 4 stages failed
    this 12 times in 16 before the x barrier stopped sharing its bytes with the epilogue's scratch)."""
    from inlaid_worker.kernels import pdl, quant_common
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    torch.manual_seed(0)
    k, n = 4096, 11008
    w = _random_weight(k, n)
    cfg = QMMConfig(8, bn, 128, split, 4, stages, True, kind)
    x = torch.randn(4, k, device="cuda").half()
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    ref = tcs_reference(x, w)
    for mode in (0, 1):
        for _ in range(8):
            y = torch.full((4, n), float("nan"), device="cuda", dtype=torch.float16)
            with pdl.scope(mode):
                launch_quant_matmul(x, w, cfg, y)
                launch_quant_matmul(x, w, cfg, y)
            torch.cuda.synchronize()
            assert float((y.float() - ref).norm() / ref.norm()) < 1e-3
            for ws, cnt in quant_common._WORKSPACES.values():
                assert bool((ws == 0).all()) and bool((cnt == 0).all()), f"workspace left dirty (PDL mode {mode})"


def test_tcs_sz_tma_args_and_refusals() -> None:
    """SZ_MODE 2 (kinds tcs2at / tcsat, session 14): tcs_args appends the scale [ITERS_P2, 64] and zero-word
    [max(ITERS_P2, 4), 8] TMA descriptors (the word descriptor stands in otherwise); N % 32 != 0 or g != 128 is refused."""
    from inlaid_worker.kernels.quant_tcs import sz_tma_supported, tcs_args

    k, n, m = 1280, 384, 4
    w, _ = _weight(k, n, False, False)
    x = torch.zeros(m, k, dtype=torch.float16)
    y = torch.empty(m, n, dtype=torch.float16)
    _, args, consts = tcs_args(x, w, 8, 3, 4, 2, y, sz_tma=True)
    s_desc, z_desc = args[20:22]
    assert consts["ITERS"] == 4 and list(s_desc.block_shape) == [4, 64] and list(z_desc.block_shape) == [4, 8]
    _, args1, _ = tcs_args(x, w, 8, 10, 4, 2, y, sz_tma=True)  # 1 tile a split: a 4-row zero box (128 bytes)
    assert list(args1[20].block_shape) == [1, 64] and list(args1[21].block_shape) == [4, 8]
    assert s_desc.base is w.scales and z_desc.base is w.qzeros
    _, args0, _ = tcs_args(x, w, 8, 3, 4, 2, y)
    assert args0[20] is args0[0] and args0[21] is args0[0], "no SZ descriptors: the word descriptor stands in"
    w328, _ = _weight(k, 328, False, False)
    assert sz_tma_supported(w) and not sz_tma_supported(w328)
    assert not sz_tma_supported(dataclasses.replace(w, group_size=256))
    with pytest.raises(ValueError, match="SZ_MODE 2"):
        tcs_args(x, w328, 8, 3, 4, 2, torch.empty(m, 328, dtype=torch.float16), sz_tma=True)


def test_tcs_sz_modes_build_and_order_offline() -> None:
    """SZ_MODE 1 / 2 (session 14, offline sm_90 build under PDL): the consumers' first shared-memory store comes after
    the PDL wait (ACQBULK) and the x loads, where SZ_MODE 0 stages scales and zeros before the wait; SZ_MODE 2 issues
    one scale and one zero TMA box per warpgroup (none of zeros for sym weights), keeps the consumer K loop within a
    few instructions of SZ_MODE 0's, no spills, and the shared-memory estimate covers the build."""
    import re
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from inlaid_worker.kernels.quant_matmul_config import tcs_smem_bytes
    from sass_tcl import BIN, analyse
    from sass_tcs import build, loop_mix

    def first_ops(asm: dict) -> list[str]:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(asm["cubin"])
            f.flush()
            sass = subprocess.run([f"{BIN}/cuobjdump", "-sass", f.name], capture_output=True, text=True,
                                  check=True).stdout  # fmt: skip
        ops = [m.group(1).split()[0].split(".")[0]
               for m in re.finditer(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([^;]+);", sass)]  # fmt: skip
        return [o for o in ops if o in ("LDG", "STS", "STSM", "ACQBULK")]

    tma = {}
    for sz in (0, 1, 2):
        asm = build(8, 4, 2, 11, 3, gdc=1, pipe=1, acc=1, sz=sz)
        res = analyse(asm)
        assert res["spill_stores"] == 0 and asm["shared_bytes"] <= tcs_smem_bytes(11, 4, 8, 2, sz == 2), (sz, res)
        ops = first_ops(asm)
        first_store = min(i for i, o in enumerate(ops) if o.startswith("STS"))
        wait = ops.index("ACQBULK")
        assert (first_store > wait and "LDG" in ops[wait:first_store]) == (sz > 0), (sz, ops[:40])
        tma[sz] = asm["ptx"].count("cp.async.bulk.tensor")
        if sz == 0:
            base = loop_mix(asm)["kloop0"]["n"]
        else:
            assert abs(loop_mix(asm)["kloop0"]["n"] - base) <= 12, (sz, loop_mix(asm))
    assert tma[1] == tma[0] and tma[2] == tma[0] + 4, tma  # 2 warpgroups x (scales, zeros)
    assert build(8, 4, 2, 11, 3, sym=1, acc=1, sz=2)["ptx"].count("cp.async.bulk.tensor") == tma[0] + 2


@pytest.mark.skipif(not ON_SM90, reason="Gluon warp-specialized wgmma kernel: CUDA sm_90 only")
@pytest.mark.parametrize(
    ("kind", "bm", "bn", "stages", "m", "split", "sym", "act", "dtype", "k", "n", "use_pdl"),
    [
        ("tcs2ao", 8, 128, 4, 4, 3, False, False, torch.float16, 4096, 512, 1),
        ("tcs2ao", 16, 128, 4, 13, 4, True, True, torch.float16, 1280, 328, 0),  # sym + act-order, N past the tile
        ("tcs2ao", 8, 64, 2, 8, 2, False, True, torch.bfloat16, 1536, 512, 1),  # one warpgroup
        ("tcs2ao", 8, 128, 4, 3, 10, False, False, torch.float16, 1280, 384, 1),  # 1 tile a split: WG 1 stages no x
        ("tcs2at", 8, 128, 4, 4, 3, False, False, torch.float16, 4096, 512, 1),
        ("tcs2at", 8, 128, 8, 8, 8, False, False, torch.float16, 11008, 512, 0),  # 7B down's K, deep ring
        ("tcs2at", 16, 128, 4, 13, 4, True, True, torch.float16, 1280, 384, 0),  # sym (no zero box) + act-order
        ("tcs2at", 8, 64, 2, 8, 2, False, True, torch.bfloat16, 1536, 512, 1),  # one warpgroup, bf16 x
        ("tcs2at", 8, 128, 4, 3, 10, False, False, torch.float16, 1280, 384, 1),  # WG 1 stages no x, 1-row scale boxes
        ("tcs2at", 8, 128, 4, 6, 5, False, True, torch.float16, 1280, 384, 0),  # 2 tiles a split (2-row boxes)
        ("tcsat", 16, 128, 6, 16, 3, False, False, torch.float16, 4096, 1408, 1),  # last split shorter (OOB rows)
        ("tcsat", 8, 128, 4, 5, 1, False, False, torch.float16, 1280, 384, 0),  # no split: plain stores
        # N % 128 != 0 (N % 32 == 0, as SZ_MODE 2 needs): the last program's scale / zero boxes reach past N
        ("tcsat", 8, 128, 4, 4, 3, False, False, torch.float16, 1280, 416, 1),  # WG 0's partly, WG 1's wholly
        ("tcs2at", 16, 128, 4, 13, 4, False, True, torch.float16, 1280, 480, 0),  # WG 1's partly (act-order)
        ("tcs2a", 8, 128, 8, 4, 3, False, False, torch.float16, 4096, 512, 1),  # lever b: the deep ring
    ],
)
def test_tcs_sz_modes_match_reference(kind: str, bm: int, bn: int, stages: int, m: int, split: int, sym: bool,
                                      act: bool, dtype: torch.dtype, k: int, n: int, use_pdl: int) -> None:  # fmt: skip
    """Session 14's kinds (SZ_MODE 1 "tcs2ao": scales / zeros staged after the x loads; SZ_MODE 2 "tcs2at" / "tcsat":
    scale and zero rows by the producer's TMA) through quant_matmul's dispatcher, against the dequantized product and
    the acc_scale model (ACC_SCALE numerics, as tcsa / tcs2a)."""
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    cfg = QMMConfig(bm, bn, 128, split, 4, stages, True, kind)
    _launch_twice_and_check(lambda x, w, y: launch_quant_matmul(x, w, cfg, y), m, k, n, sym, act, dtype, use_pdl,
                            4e-3 if dtype == torch.bfloat16 else 5e-4, True)  # fmt: skip
