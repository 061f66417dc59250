"""quant_tct (session 22, helper B: one-wave full-K column-balanced int4 GEMV, mma.sync with the weight as B, TMA ring):
the pure host planning on every decode shape (CPU, milliseconds), the offline sm_90 build (CPU, a few seconds: no
spills, shared memory within the co-residency budget and equal to the estimate's bound, PDL order in the PTX) and,
on an sm_90 GPU only, the kernel against the fp32 dequantized product (sym / asym, M = 2..16, PDL off / on, fp16 and
bf16) with a canary around y."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from gptq_weight import gptq_weight as _weight

# decode shapes (K, N): 7B / 13B q/k/v/o, fused qkv, gate/up (fused), up, down; odd N (not multiples of 8 / of 32)
DECODE = {
    "7B o": (4096, 4096), "7B qkv": (4096, 12288), "7B gate/up": (4096, 22016), "7B up": (4096, 11008),
    "7B down": (11008, 4096), "13B o": (5120, 5120), "13B qkv": (5120, 15360), "13B gate/up": (5120, 27648),
    "13B up": (5120, 13824), "13B down": (13824, 5120),
}  # fmt: skip
ODD_N = (8, 24, 328, 1000, 4100, 11004, 131 * 8 + 3)


@pytest.mark.parametrize("n", [n for _, n in DECODE.values()] + list(ODD_N))
@pytest.mark.parametrize("sms", [132, 114, 78])
def test_plan_covers_every_column_once_in_one_wave(n: int, sms: int) -> None:
    from inlaid_worker.kernels.quant_tct import CHUNK_MAX, MAX_CHUNKS, UNIT, chunks_of, plan_tct

    units = -(-n // UNIT)
    if -(-units // sms) * UNIT > MAX_CHUNKS * CHUNK_MAX:  # too wide a range for 4 chunks of 64: refused
        with pytest.raises(ValueError):
            plan_tct(n, sms)
        return
    p = plan_tct(n, sms)
    assert p.programs <= sms, "one wave"
    assert (p.programs - 1) * p.units < units <= p.programs * p.units, "contiguous ranges, the last one non-empty"
    assert sum(p.chunks) == p.block_n and len(p.chunks) <= MAX_CHUNKS
    assert all(c & (c - 1) == 0 and 8 <= c <= CHUNK_MAX for c in p.chunks), p.chunks
    assert list(p.chunks) == sorted(p.chunks, reverse=True)
    # the fewest units a program that fit one wave, raised only where the chunk count forces it
    least = -(-units // sms)
    assert p.units >= least
    assert all(len(chunks_of(UNIT * u)) > MAX_CHUNKS for u in range(least, p.units))
    # program p's columns [p * block_n, (p + 1) * block_n): disjoint, cover [0, N)
    covered = torch.zeros(p.programs * p.block_n, dtype=torch.int32)
    for pid in range(p.programs):
        covered[pid * p.block_n : (pid + 1) * p.block_n] += 1
    assert bool((covered[:n] == 1).all())


def test_plan_balance_on_the_goal_shapes() -> None:
    """The slowest SM's columns over the mean (what the 8-column unit buys: wgmma's 64-column tiles would leave 7B down
    on 64 SMs and 7B up at 172 tiles / 132 SMs = 0.65)."""
    from inlaid_worker.kernels.quant_tct import balance, plan_tct

    got = {name: balance(n, plan_tct(n)) for name, (_, n) in DECODE.items()}
    assert got["7B up"] > 0.94 and got["7B down"] > 0.96 and got["7B gate/up"] > 0.98, got
    assert min(got.values()) > 0.9, got
    assert plan_tct(11008).chunks == (64, 16, 8) and plan_tct(4096).chunks == (32,)


def test_stages_fit_the_co_residency_budget() -> None:
    from inlaid_worker.kernels.quant_tct import SMEM_BUDGET, default_stages, plan_tct, smem_bytes

    for _, n in DECODE.values():
        p = plan_tct(n)
        for nc in (1, 2, 4):
            st = default_stages(p, nc)
            if st == 0:  # (13B gate/up: 224 columns; 4 stages at nc 4 do not fit)
                assert nc == 4 and smem_bytes(p, 4, nc) > SMEM_BUDGET, (n, nc)
                continue
            # a multiple of the consumer count (quant_tct.tct_args), the deepest that fits
            assert st >= max(2, nc) and st % nc == 0, (n, nc, st)
            assert st >= 4 or p.block_n > 128, (n, nc, st)
            assert smem_bytes(p, st, nc) <= SMEM_BUDGET < smem_bytes(p, st + nc, nc) or st + nc > 16


def test_tct_refuses_what_it_cannot_run() -> None:
    from inlaid_worker.kernels.quant_tct import tct_args

    def args(k: int, n: int, m: int, act: bool = False) -> None:
        w, _ = _weight(k, n, False, act)
        tct_args(torch.zeros(m, k, dtype=torch.float16), w, torch.zeros(m, n, dtype=torch.float16), 4, 4)

    args(1024, 256, 16)  # fine
    for bad in (dict(k=1024, n=256, m=17), dict(k=1024, n=256, m=4, act=True), dict(k=1024, n=328, m=4)):
        with pytest.raises(ValueError):
            args(**bad)
    w, _ = _weight(1024, 256, False, False)
    with pytest.raises(ValueError, match="consumer warps"):  # 8 consumer warps: refused (spills), even at 8 stages
        tct_args(torch.zeros(4, 1024, dtype=torch.float16), w, torch.zeros(4, 256, dtype=torch.float16), 8, 8)
    with pytest.raises(ValueError, match="fp16 / bf16"):  # fp32 x: refused (the ring holds 16-bit x)
        tct_args(torch.zeros(4, 1024), w, torch.zeros(4, 256, dtype=torch.float16), 4, 4)
    with pytest.raises(ValueError, match="16-byte"):  # rows 2 bytes off 16-byte alignment
        x = torch.zeros(4, 1025, dtype=torch.float16)[:, :1024]
        tct_args(x, w, torch.zeros(4, 256, dtype=torch.float16), 4, 4)


def _sass():
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    import s22_tct_sass
    from sass_tcl import analyse

    return s22_tct_sass.build, analyse


@pytest.mark.parametrize(("k", "n", "m", "nc", "sym", "bf16"), [
    (4096, 11008, 16, 4, 0, 0), (11008, 4096, 8, 4, 1, 0), (4096, 12288, 4, 4, 0, 1), (13824, 5120, 2, 2, 0, 0),
])  # fmt: skip
def test_tct_builds_for_sm90_offline(k: int, n: int, m: int, nc: int, sym: int, bf16: int) -> None:
    """The sm_90 build (Triton's ptxas, no GPU) at the default ring depth: no local memory, shared memory within the
    co-residency budget and under smem_bytes's bound, mma.sync per tile and chunk, PDL (mode 1): every st.global and
    the x copies after griddepcontrol.wait, the weight copies of the prologue before it."""
    from inlaid_worker.kernels.quant_tct import SMEM_BUDGET, smem_bytes

    build, analyse = _sass()
    asm = build(k, n, m, 0, nc, sym, bf16, 1)
    res = analyse(asm)
    assert res["spill_stores"] == 0 and res["loop_local"] == 0, res
    assert asm["shared_bytes"] <= smem_bytes(asm["plan"], asm["stages"], nc) <= SMEM_BUDGET, asm["shared_bytes"]
    ptx = asm["ptx"]
    p = asm["plan"]
    assert ptx.count("mma.sync.aligned.m16n8k16") == nc * 8 * p.units, "one k16 x n8 mma a unit and 16 K, a consumer"
    wait = ptx.index("griddepcontrol.wait")
    assert ptx.index("griddepcontrol.launch_dependents") < wait
    stores = [i for i in range(len(ptx)) if ptx.startswith("st.global", i)]
    waits = [i for i in range(len(ptx)) if ptx.startswith("griddepcontrol.wait", i)]
    assert stores and all(any(w < s for w in waits) for s in stores)
    # the producer: its prologue (the first copies in the text, up to its own wait) issues the weights only: one copy
    # a word chunk and the scale row (sym, or ZTMA 0: no zero row); x's descriptor is first used right after that wait
    copy = re.compile(r"cp\.async\.bulk\.tensor\S* \[[^\]]*\], \[(%rd\d+),")
    first = copy.search(ptx).start()
    pwait = ptx.index("griddepcontrol.wait", first)
    pro = [c.group(1) for c in copy.finditer(ptx, first, pwait)]
    x_desc = copy.search(ptx, pwait).group(1)
    assert len(pro) == len(p.chunks) + 1 and x_desc not in pro, (pro, x_desc)
    assert len(set(pro)) == len(pro), "one copy per weight descriptor"


def test_ztma0_producer_is_the_sym_producer() -> None:
    """ZTMA 0 (the default since run 2's asym "illegal instruction" with the zero row in the ring): asym weights then
    issue the same TMA copies as sym ones (no zero box), and their zero words are global loads in the consumers."""
    build, _ = _sass()
    sym = build(4096, 11008, 4, 0, 4, 1, 0, 1)["ptx"]
    asym0 = build(4096, 11008, 4, 0, 4, 0, 0, 1, 0, 0)["ptx"]
    asym1 = build(4096, 11008, 4, 0, 4, 0, 0, 1, 0, 1)["ptx"]
    n = "cp.async.bulk.tensor"
    assert asym0.count(n) == sym.count(n) == asym1.count(n) - 2
    assert asym0.count("ld.global") > sym.count("ld.global")


def test_the_gate_up_build_reports_its_spills() -> None:
    """7B gate/up at M = 16 (21 units, chunks 64 + 64 + 32 + 8) is the widest plan: with ZTMA 0 the build spills 32
    bytes at CONS_REGS (recorded; the bound allows up to 64, so only a larger spill shows up), with ZTMA 1 none."""
    build, analyse = _sass()
    assert analyse(build(4096, 22016, 16, 0, 4))["spill_stores"] <= 64
    assert analyse(build(4096, 22016, 16, 0, 4, 0, 0, 0, 0, 1))["spill_stores"] == 0


# --- GPU (sm_90 only) ---------------------------------------------------------------------------------------------


def _check(k: int, n: int, m: int, sym: bool, dtype: torch.dtype, use_pdl: int, nc: int = 4, stages: int = 0) -> float:
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.quant_tcs import tcs_reference
    from inlaid_worker.kernels.quant_tct import launch_tct

    torch.manual_seed(m + 7 * n)
    w, ref_w = _weight(k, n, sym, False, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    canary = 12345.0
    buf = torch.full((m + 3, n + 40), canary, device="cuda", dtype=dtype)
    y = buf[1 : m + 1, 8 : n + 8]  # rows / columns of canary all round (row stride n + 40)
    with pdl.scope(use_pdl):
        for _ in range(2):
            launch_tct(x, w, y, stages, nc)
    torch.cuda.synchronize()
    ref = x.float() @ ref_w
    err = float((y.float() - ref).norm() / ref.norm())
    model = tcs_reference(x, w, acc_scale=True)
    merr = float((y.float() - model).norm() / model.norm())
    mask = torch.ones_like(buf, dtype=torch.bool)
    mask[1 : m + 1, 8 : n + 8] = False
    assert bool((buf[mask] == canary).all()), "stored outside y"
    assert merr < (4e-3 if dtype == torch.bfloat16 else 5e-4), merr
    return err


@pytest.mark.skipif(not ON_SM90, reason="Gluon TMA / mbarrier kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("k", "n", "m", "sym", "use_pdl"), [
    (4096, 11008, 2, False, 0), (4096, 11008, 4, True, 1), (4096, 11008, 8, False, 1), (4096, 11008, 16, False, 0),
    (11008, 4096, 2, True, 1), (11008, 4096, 4, False, 0), (11008, 4096, 8, True, 0), (11008, 4096, 16, False, 1),
    (5120, 13824, 16, True, 1), (13824, 5120, 8, False, 1), (5120, 15360, 4, False, 0), (1280, 352, 3, False, 1),
])  # fmt: skip
def test_tct_matches_the_dequantized_product(k: int, n: int, m: int, sym: bool, use_pdl: int) -> None:
    assert _check(k, n, m, sym, torch.float16, use_pdl) < 5e-4


@pytest.mark.skipif(not ON_SM90, reason="Gluon TMA / mbarrier kernel: CUDA sm_90 only")
@pytest.mark.parametrize(("nc", "stages", "m"), [(4, 4, 16), (2, 2, 8), (1, 3, 5)])
def test_tct_consumer_counts_and_shallow_rings(nc: int, stages: int, m: int) -> None:
    """Other consumer-warp counts and 2-4 stage rings (every slot reused many times) on 7B down's K."""
    assert _check(11008, 4096, m, False, torch.float16, 1, nc, stages) < 5e-4


@pytest.mark.skipif(not ON_SM90, reason="Gluon TMA / mbarrier kernel: CUDA sm_90 only")
def test_tct_bf16() -> None:
    assert _check(4096, 11008, 8, False, torch.bfloat16, 1) < 4e-3


@pytest.mark.parametrize(("nc", "stages"), [(4, 3), (2, 1), (4, 2), (2, 9), (4, 6), (4, 14)])
def test_tct_refuses_fewer_stages_than_consumers(nc: int, stages: int) -> None:
    """Stages must be a multiple of the consumer count (>= 2): otherwise a slot's previous tile is another consumer's,
    and a wait can pass on the mbarrier's 1-bit parity while that tile is still in flight (the H200 run's "unspecified
    launch failure" at nc 4, 3 stages). Refused before any descriptor is built (CPU tensors suffice)."""
    from inlaid_worker.kernels.quant_tct import tct_args

    w, _ = _weight(1280, 352, False, False, "cpu")
    x = torch.zeros(4, 1280, dtype=torch.float16)
    y = torch.zeros(4, 352, dtype=torch.float16)
    with pytest.raises(ValueError, match="stages"):
        tct_args(x, w, y, stages, nc)


def test_tct_refuses_a_misaligned_zero_row_and_a_wrong_k() -> None:
    """ZTMA 1 with asym weights needs the zero box's start (pid * units words) 16-byte aligned: units % 4 == 0 (the
    H200's illegal instruction at 7B up's 11 units); x's K must be the weight's (ZTMA 0 reads zero rows by K tile)."""
    from inlaid_worker.kernels.quant_tct import launch_tct

    w, _ = _weight(1280, 352, False, False, "cpu")  # 352 columns: 44 units on 132 programs -> 1 unit each
    y = torch.zeros(4, 352, dtype=torch.float16)
    with pytest.raises(ValueError, match="16-byte"):
        launch_tct(torch.zeros(4, 1280, dtype=torch.float16), w, y, 4, 4, ztma=1)
    with pytest.raises(ValueError, match="in_features"):
        launch_tct(torch.zeros(4, 1408, dtype=torch.float16), w, y, 4, 4)
