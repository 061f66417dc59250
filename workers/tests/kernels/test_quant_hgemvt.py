"""quant_hgemvt (session 22's TMA-ring GEMV): host planning exact on the decode shapes, the kernel's arithmetic in
pure torch (reference_math) against the fp32 dequantized product, offline sm_90 builds (no spills, shared memory
within the co-residency budget, the TMA copies and PDL instructions present and placed per PDL mode, the producer
warp's register cap), the launcher's refusals, and on CUDA (sm_90) the kernel (producer-warp and self-refilling
configs) against the fp32 reference on the 7B / 13B shapes, sym and asym, M = 1 (PDL off and on), 2 (off), 4 (on),
and on short last tiles (N % 64 == 32 at bc 64, K past the last box, M = 3), each y inside a guarded buffer (every
element of y written, nothing around it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from inlaid_worker.kernels import quant_hgemvt as T
from inlaid_worker.kernels.gptq_packing import GPTQWeight, pack_bitstream
from inlaid_worker.kernels.quant_matmul import dequantize_gptq

DECODE = [(4096, 12288), (4096, 4096), (4096, 22016), (11008, 4096), (4096, 11008),
          (5120, 15360), (5120, 5120), (5120, 27648), (13824, 5120), (5120, 13824)]  # (K, N) 7B / 13B  # fmt: skip
C = T.HGEMVTConfig
# (bc, gb, stages, warps, grid, vec, ws): producer warp + 8 consumers; 8 warps refilling the ring themselves, 2 per SM;
# 16 groups a box at 8 columns a thread; 4 consumers at 8 columns; 64-column tiles
CFGS = [C(32, 8, 4, 8, 1, 4, 1), C(32, 8, 4, 8, 2, 4, 0), C(32, 16, 3, 8, 1, 8, 1), C(32, 8, 4, 4, 1, 8, 1),
        C(64, 8, 3, 8, 1, 8, 1)]  # fmt: skip


def weight(k: int, n: int, sym: bool, device: str = "cpu", seed: int = 0) -> GPTQWeight:
    g = torch.Generator().manual_seed(seed)
    qw = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, generator=g)
    zeros = torch.full((k // 128, n), 8) if sym else torch.randint(1, 16, (k // 128, n), generator=g)
    qz = pack_bitstream(zeros - 1, 4, dim=1)
    sc = (torch.rand(k // 128, n, generator=g) * 0.01 + 0.001).half()
    return GPTQWeight(qw.to(device), qz.to(device), sc.to(device), None, 4, 128, sym, 1, k, n)


def ref(x: torch.Tensor, w: GPTQWeight) -> torch.Tensor:
    groups = (torch.arange(w.in_features, device=x.device) // 128).int()
    return x.float() @ dequantize_gptq(w.qweight, w.qzeros, w.scales, groups, 4, w.zero_offset).float()


def rel(y: torch.Tensor, r: torch.Tensor) -> float:
    return float((y.float() - r).norm() / r.norm())


@pytest.mark.parametrize("k,n", DECODE + [(4096, 11000), (4096, 8)])
@pytest.mark.parametrize("bc", [8, 16, 32])
@pytest.mark.parametrize("grid", [1, 2])
def test_plan_columns_exact(k: int, n: int, bc: int, grid: int) -> None:
    """Every column in exactly one program's run, runs differ by at most one tile, no empty program when there are
    at least as many tiles as programs; N % 32 != 0 is refused (unsupported, the tuner skips it)."""
    cfg = T.HGEMVTConfig(bc, 16, 4, 4, grid)
    p = T.plan(n, k, 1, cfg)
    runs = T.plan_columns(n, bc, p.programs)
    assert len(runs) == p.programs == min(T.SMS * grid, -(-n // bc))
    cols = [c for lo, hi in runs for c in range(lo * bc, min(hi * bc, n))]
    assert cols == list(range(n))
    sizes = [hi - lo for lo, hi in runs]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1 and max(sizes) == p.max_tiles
    assert p.nb * cfg.gb >= k // 128 > (p.nb - 1) * cfg.gb
    w = weight(k, n, False) if n % 8 == 0 and n <= 12288 and k <= 4096 else None
    if n % 32:
        assert T.config_ok(n, k, 1, cfg) is not None
        if w is not None:
            assert not T.supported(w, 1)


def test_supported_and_config_ok() -> None:
    w = weight(256, 64, False)
    assert T.supported(w, 1) and T.supported(w, 4) and not T.supported(w, 5)
    from dataclasses import replace

    assert not T.supported(replace(w, perm=torch.arange(256, dtype=torch.int32)), 1)  # act-order: unsupported
    assert not T.supported(replace(w, group_size=64), 1)
    wide = weight(256, 128, False)  # a column slice of a wider weight: row stride 128 words, not N = 64
    assert not T.supported(replace(w, qweight=wide.qweight[:, :64], out_features=64), 1)
    assert T.config_ok(11008, 4096, 1, C(8, 16, 8, 4, 1))  # 32-byte box rows: no longer supported
    assert T.config_ok(11008, 4096, 1, C(32, 4, 4, 8, 1))  # gb below the layout's 8 group rows (8 warps)
    assert T.config_ok(11008, 4096, 1, C(32, 16, 2, 16, 1, 4, 1))  # ws: at most 8 consumer warps
    assert T.config_ok(4096, 11008, 1, C(32, 8, 6, 8, 1))  # ring 100 KB + x 32 KB over the co-residency budget
    assert T.config_ok(4096, 11008, 4, C(32, 8, 12, 8, 1))  # over 227 KB
    assert T.config_ok(11008, 4096, 1, C(32, 8, 6, 8, 1)) is None
    assert T.config_ok(4096, 11008, 1, C(32, 8, 4, 8, 1)) is None


def test_config_ok_grid2_needs_two_programs_per_sm() -> None:
    """grid 2 is refused when its two programs cannot share an SM's shared memory, whatever the M (at M = 2..4 the
    single-program budget is SMEM_MAX); grid 1 with the same ring is fine."""
    assert T.config_ok(11008, 4096, 4, C(32, 8, 6, 8, 1, 4, 0)) is None  # 136 KB: one program per SM
    for m in (2, 4):
        why = T.config_ok(11008, 4096, m, C(32, 8, 6, 8, 2, 4, 0))
        assert why is not None and str(T.SMEM_GRID2) in why, why
    assert T.plan(11008, 4096, 1, C(32, 8, 6, 8, 2, 4, 0)).smem_bytes <= T.SMEM_GRID2
    assert T.config_ok(11008, 4096, 1, C(32, 8, 6, 8, 2, 4, 0), coreside=False) is None
    assert 2 * (T.SMEM_GRID2 + 1024 + 1024) <= 228 * 1024  # two programs + 1 KB reserved each + the plan's 1 KB


def test_launch_refuses_mismatched_x_and_y() -> None:
    """x's K must be the weight's in_features and y [M, N]: refused before any TMA descriptor is built (CPU tensors:
    nothing is launched)."""
    w = weight(256, 64, False)
    y = torch.zeros(1, 64, dtype=torch.float16)
    for x, yy in ((torch.zeros(1, 384, dtype=torch.float16), y), (torch.zeros(1, 128, dtype=torch.float16), y),
                  (torch.zeros(2, 256, dtype=torch.float16), y), (torch.zeros(1, 256, dtype=torch.float16), y[:, :32])):  # fmt: skip
        before = len(T._DESCS)
        with pytest.raises(ValueError, match="in_features"):
            T.launch_hgemvt(x, w, C(), yy)
        assert len(T._DESCS) == before


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("m", [1, 3])
def test_reference_math(sym: bool, m: int) -> None:
    """The kernel's arithmetic model (half2 chains of 4 words, fp32 per-group scale) matches the fp32 product; a
    wrong zero convention would not."""
    w = weight(512, 64, sym, seed=1)
    x = torch.randn(m, 512, generator=torch.Generator().manual_seed(2)).half()
    y = T.reference_math(x, w)
    r = ref(x, w)
    assert rel(y, r) < 3e-3
    from dataclasses import replace

    canary = replace(w, sym=False, zero_offset=0) if sym else replace(w, zero_offset=0)  # an off-by-one zero
    assert rel(T.reference_math(x, canary), r) > 1e-2


def _build(n: int, k: int, m: int, cfg: T.HGEMVTConfig, sym: bool, gdc: int):
    """The offline sm_90 build of bench/kernels/s22b_sass.py (Triton's ptxas, no GPU)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    import s22b_sass

    return s22b_sass.build(n, k, m, cfg, sym, gdc)


@pytest.mark.parametrize("n,k,m,cfg,sym", [(11008, 4096, 1, CFGS[0], False), (4096, 11008, 1, CFGS[1], True),
                                           (4096, 11008, 4, C(32, 8, 4, 8, 1, 4, 1, 128), False),
                                           (11008, 4096, 1, CFGS[2], True),
                                           (4128, 4096, 1, CFGS[4], False)])  # fmt: skip
def test_sm90_build(n: int, k: int, m: int, cfg: T.HGEMVTConfig, sym: bool) -> None:
    """Offline sm_90 build: no local memory (spills), shared memory as planned and within the co-residency budget,
    4 word slabs + scales (+ zeros) TMA copies per issue site, the PDL wait and launch_dependents in the PTX; ws: the
    register cap (two programs of consecutive kernels fit an SM's registers) and the producer's setmaxnreg."""

    ck = _build(n, k, m, cfg, sym, 1)
    p = T.plan(n, k, m, cfg)
    assert T.config_ok(n, k, m, cfg) is None
    assert abs(ck.metadata.shared - p.smem_bytes) <= 1024
    assert ck.metadata.shared <= (T.SMEM_CORESIDE if m == 1 else T.SMEM_MAX)
    if m > 1:
        assert T.config_ok(n, k, m, cfg, coreside=True) is not None  # x for 4 rows of K = 11008 does not co-reside
    ptx = ck.asm["ptx"]
    assert ptx.count("griddepcontrol.wait") == 1 and ptx.count("griddepcontrol.launch_dependents") == 1
    wait = ptx.index("griddepcontrol.wait")
    assert ptx.index("griddepcontrol.launch_dependents") < wait
    assert ptx.index("cp.async.bulk.tensor") < wait  # the ring before the wait
    assert wait < ptx.index("st.global")  # every store after it
    assert wait < ptx.index("ld.global")  # x (the only global load) read after it
    import s22b_sass  # on sys.path since _build

    res, sass = s22b_sass.cubin_text(ck)
    assert "LOCAL:0" in res and "STACK:0" in res, res
    assert sass.count("UTMALDG") == (cfg.stages + 1) * (4 + 1 + (0 if sym else 1))  # unrolled prologue + refill
    regs = int(res.split("REG:")[1].split()[0])
    if cfg.ws:
        assert regs <= cfg.regs and (m > 1 or 2 * regs * 32 * (cfg.warps + 4) <= 65536), regs  # (M = 4: 128)
        assert "USETMAXREG" in sass
    else:
        assert "USETMAXREG" not in sass and 2 * cfg.grid * regs * 32 * cfg.warps <= 65536, regs


@pytest.mark.parametrize("cfg,gdc", [(CFGS[0], 2), (CFGS[0], 3), (CFGS[1], 3), (CFGS[0], 0)])
def test_sm90_build_pdl_modes(cfg: T.HGEMVTConfig, gdc: int) -> None:
    """kernels.pdl's modes: 0 no griddepcontrol; 2 the prefetch before the wait and the dependents' launch after the
    main loop (in the consumers' loop nest, past their first `ready` wait), 3 the wait before the first TMA copy."""
    ptx = _build(11008, 4096, 1, cfg, False, gdc).asm["ptx"]
    if gdc == 0:
        assert "griddepcontrol" not in ptx
        return
    assert ptx.count("griddepcontrol.wait") == 1 and ptx.count("griddepcontrol.launch_dependents") == 1
    wait = ptx.index("griddepcontrol.wait")
    launch = ptx.index("griddepcontrol.launch_dependents")
    first_copy = ptx.index("cp.async.bulk.tensor")
    assert wait < ptx.index("ld.global") and wait < ptx.index("st.global")
    if gdc == 2:
        assert first_copy < wait and launch > ptx.index("mbarrier.try_wait", wait)
    else:
        assert launch < wait < first_copy


cuda = pytest.mark.skipif(not ON_SM90, reason="Gluon TMA / mbarrier kernel: CUDA sm_90 only")


@cuda
@pytest.mark.parametrize("k,n", [(4096, 11008), (11008, 4096), (5120, 13824), (13824, 5120)])
@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("m,use_pdl", [(1, False), (1, True), (2, False), (4, True)])
def test_gpu_matches_reference(k: int, n: int, sym: bool, m: int, use_pdl: bool) -> None:
    """M = 1: the producer-warp config and the self-refilling 2-per-SM one; M = 2 / 4: the first that fits (each
    (config, K, M, sym, PDL) is its own build: the matrix is kept to ~50 builds); each y in launch_guarded's buffer."""
    w = weight(k, n, sym, "cuda", seed=k + n + m)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    r = ref(x, w)
    cfgs = [c for c in CFGS + [C(32, 8, 4, 8, 1, 4, 1, 128)] if T.config_ok(n, k, m, c) is None]
    assert cfgs
    for cfg in cfgs[: 2 if m == 1 else 1]:
        y = launch_guarded(x, w, cfg, 1 if use_pdl else 0)
        assert rel(y, r) < 5e-3, (cfg, rel(y, r))


GUARD = -777.0


def launch_guarded(x: torch.Tensor, w: GPTQWeight, cfg: T.HGEMVTConfig, mode: int) -> torch.Tensor:
    """The kernel canary: y [M, N] (NaN) inside a buffer with a guard row above and below and 64 guard columns each
    side (GUARD); after the launch every element of y is written (no NaN left) and nothing around it."""
    from inlaid_worker.kernels import pdl

    m, n = x.shape[0], w.out_features
    yb = torch.full((m + 2, n + 128), GUARD, device="cuda", dtype=torch.float16)
    y = yb[1 : m + 1, 64 : 64 + n]
    y.fill_(float("nan"))
    with pdl.scope(mode):
        T.launch_hgemvt(x, w, cfg, y)
    torch.cuda.synchronize()
    assert not bool(torch.isnan(y).any()), (cfg, int(torch.isnan(y).sum()), "elements of y not written")
    around = torch.ones_like(yb, dtype=torch.bool)
    around[1 : m + 1, 64 : 64 + n] = False
    assert bool((yb[around] == GUARD).all()), (cfg, int((yb[around] != GUARD).sum()), "written outside y")
    return y


@cuda
@pytest.mark.parametrize("k,n,m,cfg,sym,mode", [
    (4096, 4128, 1, C(64, 8, 3, 8, 1, 8, 1), False, 1),  # bc 64, N % 64 == 32: the last tile half past N
    (4224, 11040, 3, C(64, 8, 3, 8, 1, 4, 1, 128), True, 0),  # + K = 33 groups (last box 1 of 8), M = 3 of BM 4
    (4224, 352, 2, C(32, 8, 4, 4, 2, 8, 0), False, 1),  # 11 tiles, 2 programs per SM, self-refilling
    (11008, 4128, 4, C(64, 8, 2, 8, 1, 4, 1, 128), False, 2),  # PDL mode 2 (all five build offline with no spills)
    (4096, 11008, 1, CFGS[0], True, 3),  # PDL mode 3
])  # fmt: skip
def test_gpu_short_tiles_and_pdl_modes(k: int, n: int, m: int, cfg: T.HGEMVTConfig, sym: bool, mode: int) -> None:
    """Short last tiles (the `col < N` and `om < M` store masks, TMA boxes past N and past K zero-filled) and PDL
    modes 2 / 3, each in the guarded buffer and against the fp32 reference."""
    assert T.config_ok(n, k, m, cfg) is None
    w = weight(k, n, sym, "cuda", seed=k + n + m)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    y = launch_guarded(x, w, cfg, mode)
    assert rel(y, ref(x, w)) < 5e-3, (cfg, rel(y, ref(x, w)))


@cuda
@pytest.mark.parametrize("pad", [64, 2])
def test_gpu_strided_x_rows(pad: int) -> None:
    """x rows with a padded row stride (pad 2: rows 4-byte aligned only, so the x reads cannot be 16-byte loads; the
    offline build without the stride's divisibility emits scalar loads) and y a row slice of a wider buffer."""
    w = weight(4096, 4096, False, "cuda", seed=5)
    xb = torch.randn(3, 4096 + pad, device="cuda", dtype=torch.float16)
    x = xb[:, :4096]
    yb = torch.zeros(3, 4096 + 32, device="cuda", dtype=torch.float16)
    y = yb[:, :4096]
    T.launch_hgemvt(x, w, C(32, 8, 4, 8, 1, 4, 1, 128), y)
    torch.cuda.synchronize()
    assert rel(y, ref(x, w)) < 5e-3
    assert bool((yb[:, 4096:] == 0).all())
