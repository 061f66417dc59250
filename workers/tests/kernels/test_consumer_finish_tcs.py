"""The "cfin" decode fusion's tcs deferral (session 15; kernels.consumer_finish.TCS_DEFER, quant_tcs.launch_tcs's
`defer`): the tensor-core GEMV's splits only add their partial sums into the shared workspace (no arrival counter, no
last arriver, y not written) and fused_norm.add_rms_norm_sums reads and zeroes them.

CPU (no GPU): the two kind lists agree; the offline sm_90 build of the deferred epilogue holds only the fp32 adds (no
counter, no exchange; REDs in the SASS); the gating (switch on by default since session 15; never off CUDA or under the interpreter,
where the tcs kinds run quant_tc); launch_tcs refuses `defer` where the kind has no read-and-clear epilogue or K does
not split. CUDA (sm_90): the deferred GEMV + norm against the unfused pair with the same plan (launch_tcs with its
counter epilogue, then add_rms_norm) at the 7B down shape with the shipped H200 plans (M = 4, 8, 16) and small shapes
of every deferrable kind family, eager under PDL modes 0 and 1, twice each (the second call finds the workspace
zeroed); the workspace and counters zero right after each pair; a one-layer forward_fast step with "cfin" and a
forced tcs pick (down deferred, o falling back: one K tile) against "none".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from cases import ON_SM90

BENCH = Path(__file__).resolve().parents[3] / "bench" / "kernels"
EPS = 1e-5


@pytest.fixture
def tcs_defer() -> Any:
    """consumer_finish with TCS_DEFER on for the test (restored after)."""
    from inlaid_worker.kernels import consumer_finish as cf

    prev = cf.TCS_DEFER
    cf.TCS_DEFER = True
    try:
        yield cf
    finally:
        cf.TCS_DEFER = prev


def _weight(k: int, n: int, device: str = "cpu"):  # type: ignore[no-untyped-def]
    """A 4-bit g128 weight of random words (N-contiguous, 16-byte rows: tcs_supported), scales in [0.001, 0.011)."""
    from inlaid_worker.kernels.gptq_packing import GPTQWeight

    qw = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, device=device)
    qz = torch.randint(-(2**31), 2**31 - 1, (k // 128, n // 8), dtype=torch.int32, device=device)
    sc = (torch.rand(k // 128, n, device=device) * 0.01 + 0.001).half()
    return GPTQWeight(qw, qz, sc, None, 4, 128, False, 1, k, n)


def test_defer_kinds_agree_and_the_switch_is_on_by_default() -> None:
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import quant_tcs
    from inlaid_worker.kernels.quant_matmul_config import TCS_KINDS

    assert cf.TCS_DEFER_KINDS == quant_tcs.DEFER_KINDS
    assert set(cf.TCS_DEFER_KINDS) == set(TCS_KINDS) - {"tcss"}, "every read-and-clear kind the dispatcher runs"
    assert cf.TCS_DEFER is True, 'shipped: "cfin" defers the tcs picks too (session 15)'


def test_deferred_epilogue_builds_with_fp32_adds_only_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """sm_90 build on the CPU (bench/kernels/sass_tcs.py's, a tcs2a plan: PIPE, ACC_SCALE, split-K): with DEFER the
    epilogue keeps the splits' relaxed fp32 adds (SASS: REDG) and drops the counter's acq_rel add and the last
    arriver's exchanges."""
    sys.path.insert(0, str(BENCH))
    import sass_tcs
    from inlaid_worker.kernels import quant_tcs

    layouts = quant_tcs.tcs_layouts
    ops: dict[int, Counter] = {}
    for defer in (0, 1):  # sass_tcs.build takes the constexprs it knows; DEFER goes in with the layouts
        monkeypatch.setattr(quant_tcs, "tcs_layouts", lambda bm, d=defer: {**layouts(bm), "DEFER": d})
        asm = sass_tcs.build(8, 4, 2, 11, 8, pipe=1, acc=1)
        ops[defer] = Counter(re.findall(r"\b((?:red|atom)\.[\w.]+)", asm["ptx"]))
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(asm["cubin"])
            f.flush()
            sass = subprocess.run([os.path.join(sass_tcs.BIN, "cuobjdump"), "-sass", f.name], capture_output=True,
                                  text=True, check=True).stdout  # fmt: skip
        ops[defer].update(f"sass:{op}" for op in re.findall(r"\b((?:RED|ATOM)G?\.[\w.]+)", sass))
    adds = "atom.global.gpu.relaxed.add.f32"
    assert ops[0][adds] == ops[1][adds] > 0, ops
    assert ops[0]["atom.global.gpu.acq_rel.add.u32"] > 0 and ops[0]["atom.global.gpu.relaxed.exch.b32"] > 0, ops[0]
    assert set(ops[1]) == {adds, *(k for k in ops[1] if k.startswith("sass:REDG"))}, ops[1]


def test_gating_falls_back_off_cuda(tcs_defer: Any) -> None:
    """A tcs pick that splits K: deferred only with the switch on, on CUDA outside the interpreter; here (CPU) the
    kind runs quant_tc, so gemv_add_norm launches nothing and returns None (the caller runs GEMV + add_rms_norm)."""
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    cf = tcs_defer
    w = _weight(256, 64)
    x = torch.randn(3, 256).half()
    h = torch.zeros(3, 64, dtype=torch.float16)
    cfg = QMMConfig(8, 64, 128, 2, 4, 2, True, "tcs2a")
    assert not cf.tcs_defer_ok(x, w, cfg) and not cf.gemv_add_norm_ok(x, w, h, cfg)
    assert cf.gemv_add_norm(x, w, h, torch.ones(64).half(), EPS, cfg) is None
    assert bool((h == 0).all())


def test_launch_tcs_refuses_defer_without_a_read_and_clear_split() -> None:
    """Per-split slots ("tcss"), one K split, or a diagnosis launch: ValueError before any launch (host-side, CPU)."""
    from inlaid_worker.kernels.quant_tcs import launch_tcs

    w = _weight(256, 64)
    x = torch.randn(3, 256).half()
    y = torch.empty(3, 64, dtype=torch.float16)
    for kind, split, diag in (("tcss", 2, 0), ("tcs2a", 1, 0), ("tcs2a", 2, 1), ("tcs0", 2, 0)):
        with pytest.raises(ValueError, match="tcs defer"):
            launch_tcs(x, w, 8, split, 2, 1, y, kind, diag=diag, defer=True)


# (K, N, M, kind, block_m, block_n, split, stages): the 7B down shape with the shipped H200 plans (M = 4 / 8: tcs2a m8
# s8; M = 16: tcs2a m16 s8) and tcsat at M = 16; small shapes of the other deferrable families (tcs, tcsa, tcs2,
# tcs2ao), one warpgroup, N not a multiple of the tile, M past one 8-row block
GPU_CASES = {
    "7b-down-tcs2a-m4": (11008, 4096, 4, "tcs2a", 8, 128, 8, 4),
    "7b-down-tcs2a-m8": (11008, 4096, 8, "tcs2a", 8, 128, 8, 4),
    "7b-down-tcs2a-m16": (11008, 4096, 16, "tcs2a", 16, 128, 8, 4),
    "7b-down-tcsat-m16": (11008, 4096, 16, "tcsat", 16, 128, 8, 4),
    "tcs-m3": (512, 320, 3, "tcs", 8, 128, 2, 2),
    "tcsa-m11": (640, 192, 11, "tcsa", 8, 64, 3, 2),
    "tcs2-m5": (384, 256, 5, "tcs2", 8, 128, 3, 2),
    "tcs2ao-m16": (512, 256, 16, "tcs2ao", 16, 128, 4, 2),
}


def _dirty() -> int:
    from inlaid_worker.kernels import quant_common

    torch.cuda.synchronize()
    return sum(int((ws != 0).sum()) + int((cnt != 0).sum()) for ws, cnt in quant_common._WORKSPACES.values())


@pytest.mark.skipif(not ON_SM90, reason="quant_tcs: CUDA sm_90 only")
@pytest.mark.parametrize("case_id", list(GPU_CASES))
def test_deferred_tcs_norm_matches_the_unfused_pair(case_id: str, tcs_defer: Any) -> None:
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_tcs import launch_tcs

    cf = tcs_defer
    k, n, m, kind, bm, bn, split, stages = GPU_CASES[case_id]
    torch.manual_seed(0)
    w = _weight(k, n, "cuda")
    cfg = QMMConfig(bm, bn, 128, split, 4, stages, True, kind)
    g = (torch.rand(n, device="cuda") + 0.5).half()
    assert _dirty() == 0
    for mode in (0, 1):
        with pdl.scope(mode):
            for rep in range(2):
                x = torch.randn(m, k, device="cuda").half()
                h0 = (torch.randn(m, n, device="cuda") * 3).half()
                h = h0.clone()
                assert cf.gemv_add_norm_ok(x, w, h, cfg)
                got = cf.gemv_add_norm(x, w, h, g, EPS, cfg)
                assert got is not None
                assert _dirty() == 0, f"workspace / counters not zero right after the pair (pdl {mode}, call {rep})"
                y = torch.empty(m, n, dtype=torch.float16, device="cuda")
                launch_tcs(x, w, bm, split, stages, bn // 64, y, kind)
                h_u = h0.clone()
                out_u = add_rms_norm(y, g, EPS, residual=h_u)
                torch.cuda.synchronize()
                top = max(float(h_u.float().abs().max()), float(y.float().abs().max()))
                assert float((h.float() - h_u.float()).abs().max()) / top < 4e-3, (mode, rep)
                assert float((got.float() - out_u.float()).abs().max()) / float(out_u.float().abs().max()) < 8e-3
                assert bool(torch.isfinite(got).all())
    assert _dirty() == 0


@pytest.mark.skipif(not ON_SM90, reason="quant_tcs: CUDA sm_90 only")
def test_forward_defers_the_tcs_pick(tcs_defer: Any) -> None:
    """One decode step of a one-layer tiny Llama (pdl_helpers.tiny_int4_decode) through forward_fast with "cfin" and a
    tcs2a pick forced (split 2): down (K = 256) defers, o (K = 128: one K tile) falls back; against "none"."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    cf = tcs_defer
    c, w, d = ph.tiny_int4_decode("cuda", 1)
    real_pick, real_launch = cf.config_for, cf._launch_deferred
    calls: list[tuple[int, str]] = []

    def spy(x2: torch.Tensor, wt: Any, cfg: Any, h: torch.Tensor) -> Any:
        calls.append((wt.in_features, cfg.kind))
        return real_launch(x2, wt, cfg, h)

    def run(fusion: str) -> torch.Tensor:
        return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                            DecodeLayout(d["tables"], d["lens"], 1, fusion), None).float()  # fmt: skip

    base = run("none")
    cf.config_for = lambda x2, wt: QMMConfig(8, 64, 128, 2, 4, 2, True, "tcs2a")
    cf._launch_deferred = spy
    try:
        got = run("cfin")
    finally:
        cf.config_for, cf._launch_deferred = real_pick, real_launch
    assert calls == [(c.intermediate_size, "tcs2a")], calls
    assert bool(torch.isfinite(got).all())
    assert float((got - base).norm() / base.norm()) < 1e-2
    assert _dirty() == 0
