"""The "+dn" decode fusion (kernels.deferred_norm): the consumer GEMV forms h' = fp16(h + fp16(sums)) from a deferred
producer's fp32 sums and the residual h on load, multiplies its weights by h' o w (scaled per tile by a power of two)
and the norm's r is applied late (quant_hgemvr's dnorm / x_norm).

Kernel cases: the self-finishing consumer (qkv, dnorm mode 2) against add_rms_norm + the same GEMV on x, for the row
kinds (look-ahead, burst with tiles past the program's last, pin; split-K or not; 1-3 rows); the deferred consumer
(gate/up, mode 1) whose down GEMV applies r to the gate / up sums (x_norm) against the same pair on x; h' stored exactly
by the pid_n == 0 programs, h untouched, the slots' sum(h'^2), the qkv slots, the split-K workspace and the counters
left zero; a residual near fp16's top (with norm weights > 1: h o w overflows fp16 unscaled) and a tiny one (its
unscaled products underflow) give today's result; the argument checks. The forward case runs a 2-layer decode step
through forward_fast: "swiglu+cfin+g+dn" against "swiglu+cfin+g" (which launches, the two norm launches left, the
shared workspace zero), and the fallbacks (LoRA, a down pick that cannot defer, a qkv pick that is no row GEMV, no row
attention), which run "swiglu+cfin+g" bit for bit. On CUDA in-process; on the CPU once in a subprocess under
TRITON_INTERPRET=1 (this file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case, with_gpu_cases

# (K, N, M, kind, block_m, block_k, split, h scale)
QKV_CASES: dict[str, tuple] = {
    "qkv-m1-split2": (256, 128, 1, "hgemvr", 1, 64, 2, 5.0),
    "qkv-m3-burst": (256, 128, 3, "hgemvrb", 4, 64, 2, 5.0),  # 2 tiles a program of 3 (past the last: ss 0)
    "qkv-m2-nosplit": (256, 128, 2, "hgemvr", 2, 128, 1, 5.0),
    "qkv-m1-pin": (256, 128, 1, "hgemvrq", 1, 128, 2, 5.0),
    "qkv-m1-burst3": (384, 128, 1, "hgemvrb", 1, 128, 1, 5.0),  # 3 tiles in one program
    "qkv-m2-huge": (256, 128, 2, "hgemvr", 2, 64, 2, 1.0e4),  # |h' o w| > 65504: overflows unless scaled
    "qkv-m1-tiny": (256, 128, 1, "hgemvr", 1, 64, 2, 4.0e-4),  # unscaled products would underflow
}
# (K, I, N, M, gate/up (kind, block_m, block_k, split), down (kind, block_m, block_k, split))
GU_CASES: dict[str, tuple] = {
    "gu-m1": (128, 128, 64, 1, ("hgemvr", 1, 64, 2), ("hgemvr", 1, 64, 2)),
    "gu-m3-burst": (256, 256, 64, 3, ("hgemvrb", 4, 64, 2), ("hgemvrq", 4, 128, 2)),
}
GPU_CASES: dict[str, tuple] = {  # the 7B batch-1 picks of the shipped H200 table
    "qkv-7b-m1": (4096, 12288, 1, "hgemvr", 1, 128, 8, 5.0),
    "gu-7b-m1": (4096, 11008, 4096, 1, ("hgemvr", 1, 128, 4), ("hgemvr", 1, 128, 22)),
}
ALL_CASES = {**QKV_CASES, **GU_CASES, **GPU_CASES, "checks": (), "forward": ()}


def _cfg(kind: str, bm: int, bk: int, split: int) -> Any:
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    return QMMConfig(bm, 64, bk, split, 2, 1, False, kind)


def _inputs(case_id: str, m: int, k: int, scale: float, device: str) -> tuple:
    """(producer sums fp32, h fp16, norm weight fp16 in [0.5, 1.5), h' = fp16(h + fp16(sums)))."""
    torch.manual_seed(len(case_id))
    sums = torch.randn(m, k, device=device) * scale * 0.5
    h = (torch.randn(m, k, device=device) * scale).half()
    g = (torch.rand(k, device=device) + 0.5).half()
    if scale > 1e3:  # a few values near fp16's top with weights 1.5: h o w = 9e4 there
        h[:, ::61] = 6.0e4
        sums[:, ::61] = 0.0
        g[::61] = 1.5
    return sums, h, g, (h.float() + sums.half().float()).half()


def _dirty() -> int:
    from inlaid_worker.kernels import quant_common

    return sum(int((ws != 0).sum()) + int((cnt != 0).sum()) for ws, cnt in quant_common._WORKSPACES.values())


def run_qkv(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels.deferred_norm import gemv_dnorm
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags

    k, n, m, kind, bm, bk, split, scale = ALL_CASES[case_id]
    _, w, _ = make_case(case_id, k, n, m, 128, False, False, "gptq", device)
    cfg = _cfg(kind, bm, bk, split)
    out: dict[str, Any] = dict(err=0.0, h_exact=True, h_kept=True, dirty=0, finite=True, top_hw=0.0, top_h=0.0)
    for rep in range(2):  # the second call finds the slots and the workspace as the first left them
        sums, h, g, hp = _inputs(case_id + str(rep), m, k, scale, device)
        x = add_rms_norm(hp.clone(), g, 1e-5)  # today's x (the norm kernel on h')
        out["top_hw"] = max(out["top_hw"], float((hp.float() * g.float()).abs().max()))  # unscaled u's largest
        out["top_h"] = max(out["top_h"], float(hp.float().abs().max()))
        ref = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_hgemvr(x, w, bm, 64, bk, split, 2, ref, **hgemvr_flags(kind))
        h0, h_out = h.clone(), torch.zeros_like(h)
        slot = torch.zeros(m * -(-n // 64), device=device)
        y = gemv_dnorm(sums, h, h_out, g, w, cfg, slot, 1e-5)
        out["err"] = max(out["err"], float((y.float() - ref.float()).abs().max() / ref.float().abs().max()))
        out["finite"] = out["finite"] and bool(torch.isfinite(y).all())
        out["h_exact"] = out["h_exact"] and bool(torch.equal(h_out, hp))
        out["h_kept"] = out["h_kept"] and bool(torch.equal(h, h0))
        out["dirty"] += int((slot != 0).sum()) + _dirty()
    return out


def run_gu(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels.consumer_finish import gemv_gu_sums, stand_in_x
    from inlaid_worker.kernels.deferred_norm import down_xnorm, gemv_dnorm
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags

    k, inter, n, m, pick_gu, pick_d = ALL_CASES[case_id]
    _, w_gu, _ = make_case(case_id, k, 2 * inter, m, 128, False, False, "gptq", device)
    _, w_d, _ = make_case(case_id + "-down", inter, n, m, 128, False, False, "gptq", device)
    cfg_gu, cfg_d = _cfg(*pick_gu), _cfg(*pick_d)
    sums, h, g, hp = _inputs(case_id, m, k, 3.0, device)
    x = add_rms_norm(hp.clone(), g, 1e-5)
    gu_ref = gemv_gu_sums(x, w_gu, cfg_gu)  # today's "+g": gate/up on x, down on its sums
    assert gu_ref is not None
    y_ref = torch.empty(m, n, dtype=torch.float16, device=device)
    xd = stand_in_x(m, inter, device)
    launch_hgemvr(xd, w_d, cfg_d.block_m, 64, cfg_d.block_k, cfg_d.split_k, 2, y_ref, x_sums=gu_ref,
                  **hgemvr_flags(cfg_d.kind))  # fmt: skip
    gu_ref.zero_()  # (the region's contract: its norm would clear it)
    h0, h_out = h.clone(), torch.zeros_like(h)
    region = torch.zeros(m * 2 * inter, device=device)
    slot = torch.zeros(m, device=device)
    gu = gemv_dnorm(sums, h, h_out, g, w_gu, cfg_gu, slot, 1e-5, region=region)
    ss = (hp.float() ** 2).sum(1)
    d_region = torch.zeros(m * n, device=device)
    d_sums = down_xnorm(gu, w_d, cfg_d, slot, k, 1e-5, d_region)
    top = float(y_ref.float().abs().max())
    return dict(err=float((d_sums.half().float() - y_ref.float()).abs().max()) / top,
                slot_err=float((slot - ss).abs().max() / ss.max()), h_exact=bool(torch.equal(h_out, hp)),
                h_kept=bool(torch.equal(h, h0)), dirty=_dirty(), finite=bool(torch.isfinite(d_sums).all()))  # fmt: skip


def run_checks(device: str) -> dict[str, Any]:
    """launch_hgemvr's dnorm / x_norm argument checks: which raise ValueError (before anything is launched)."""
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    k, n, m = 128, 64, 1
    _, w, _ = make_case("checks", k, n, m, 128, False, False, "gptq", device)
    _, w_perm, _ = make_case("checks-perm", 2 * k, n, m, 64, False, True, "gptq", device)  # (act-order: a perm)
    sums, h, g, _ = _inputs("checks", m, k, 1.0, device)
    h_out, slot, y = torch.zeros_like(h), torch.zeros(8, device=device), torch.empty(m, n, dtype=torch.float16,
                                                                                      device=device)  # fmt: skip
    dn = (sums, h, h_out, g, slot, 1e-5)
    bad = {
        "same_h": dict(dnorm=(sums, h, h, g, slot, 1e-5)),
        "finish_no_defer": dict(dnorm=dn, finish=True),
        "sums_fp16": dict(dnorm=(sums.half(), h, h_out, g, slot, 1e-5)),
        "weight_len": dict(dnorm=(sums, h, h_out, g[:64], slot, 1e-5)),
        "slot_small": dict(dnorm=(sums, h, h_out, g, torch.zeros(0, device=device), 1e-5)),
        "x_norm_alone": dict(x_norm=(slot, k, 1e-5)),
        "with_x_sums": dict(dnorm=dn, x_sums=torch.zeros(m, 2 * k, device=device)),
    }
    out: dict[str, Any] = {}
    for name, kw in bad.items():
        try:
            launch_hgemvr(h, w, 1, 64, 64, 2, 2, y, **kw)
            out[name] = "ran"
        except ValueError:
            out[name] = "ValueError"
    sums2, h2, g2, _ = _inputs("checks-perm", m, 2 * k, 1.0, device)
    try:
        assert w_perm.perm is not None
        launch_hgemvr(h2, w_perm, 1, 64, 64, 2, 2, y, dnorm=(sums2, h2, torch.zeros_like(h2), g2, slot, 1e-5))
        out["perm"] = "ran"
    except ValueError:
        out["perm"] = "ValueError"
    return out


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a 2-layer tiny Llama (hidden 128, intermediate 256) through forward_fast with a
    split-K row GEMV forced for every GEMV (block_k 64: split in two) and the row attention: "swiglu+cfin+g+dn"
    against "swiglu+cfin+g", then the fallbacks."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 2)
    saved = (cf.config_for, dn.config_for, dn.launch_hgemvr, llama_fast.row_rope_for, llama_fast.add_rms_norm,
             llama_fast.add_rms_norm_sums, cf.add_rms_norm_sums)  # fmt: skip
    calls: list[str] = []

    class Lora:  # LoRA on every module, delta 0: the unfused path with its adds
        def add(self, y: torch.Tensor, x: torch.Tensor, i: int, name: str) -> None:
            pass

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append("dn" if kw.get("dnorm") is not None else "xnorm" if kw.get("x_norm") is not None else "defer")
        return saved[2](*args, **kw)

    def norm_spy(label: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            calls.append(label)
            return fn(*args, **kw)

        return wrapped

    def force(down_split: int = 2, qkv_kind: str = "hgemvr") -> None:
        def config_for(x2: torch.Tensor, wt: Any) -> QMMConfig:
            kind = qkv_kind if wt.out_features == 256 and wt.in_features == 128 else "hgemvr"  # qkv: 128 + 2 * 64
            return QMMConfig(2, 64, 64, down_split if wt.in_features == 256 else 2, 2, 1, False, kind)

        cf.config_for = dn.config_for = config_for

    def run(fusion: str, lora: Any = None) -> torch.Tensor:
        return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                            DecodeLayout(d["tables"], d["lens"], 1, fusion), lora).float()  # fmt: skip

    out: dict[str, Any] = {}
    try:
        dn.launch_hgemvr = spy
        llama_fast.row_rope_for = lambda rows, rep, dev: {}  # the row attention with rotary inside (CUDA's default)
        llama_fast.add_rms_norm = norm_spy("norm", saved[4])
        llama_fast.add_rms_norm_sums = norm_spy("norm_sums", saved[5])
        cf.add_rms_norm_sums = norm_spy("cf_norm", saved[6])
        force()
        base = run("swiglu+cfin+g")
        calls.clear()
        got = run("swiglu+cfin+g+dn")
        out["dn"] = dict(err=float((got - base).norm() / base.norm()), calls=list(calls),
                         finite=bool(torch.isfinite(got).all()), dirty=_dirty())  # fmt: skip
        for name, fusion, down_split, qkv_kind, lora, rope in (
            ("lora", "swiglu+cfin+g+dn", 2, "hgemvr", Lora(), True),
            ("down_nosplit", "swiglu+cfin+g+dn", 1, "hgemvr", None, True),
            ("qkv_not_row", "swiglu+cfin+g+dn", 2, "hgemv", None, True),
            ("no_row_attention", "swiglu+cfin+g+dn", 2, "hgemvr", None, False),
        ):  # fmt: skip
            force(down_split, qkv_kind)
            if not rope:
                llama_fast.row_rope_for = lambda rows, rep, dev: None
            ref = run("swiglu+cfin+g", lora)
            calls.clear()
            got = run(fusion, lora)
            out[name] = dict(same=bool(torch.equal(got, ref)), dn_calls=sum(x in ("dn", "xnorm") for x in calls))
            llama_fast.row_rope_for = lambda rows, rep, dev: {}
    finally:
        (cf.config_for, dn.config_for, dn.launch_hgemvr, llama_fast.row_rope_for, llama_fast.add_rms_norm,
         llama_fast.add_rms_norm_sums, cf.add_rms_norm_sums) = saved  # fmt: skip
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "forward":
        return run_forward(device)
    if case_id == "checks":
        return run_checks(device)
    return run_gu(case_id, device) if case_id.startswith("gu") else run_qkv(case_id, device)


@pytest.fixture(scope="module")
def dn_case() -> Any:
    return case_runner(__file__, run_case, "deferred norm", 600)


def _tol() -> float:
    # fp16 y: a few ulps of the largest value (r applied to the fp32 sum instead of to x: another rounding order)
    return 4e-3 if torch.cuda.is_available() else 3e-3


@pytest.mark.parametrize("case_id", with_gpu_cases(QKV_CASES, [c for c in GPU_CASES if c.startswith("qkv")]))
def test_self_finishing_consumer_matches_norm_then_gemv(case_id: str, dn_case: Any) -> None:
    res = dn_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["err"] <= _tol(), res
    assert res["h_exact"] and res["h_kept"], res
    assert res["dirty"] == 0, "slots, split-K workspace or counters not left at zero"
    if case_id.endswith("huge"):  # the case is what it says: h' finite, h' o w past fp16's largest value
        assert res["top_h"] < 65504 < res["top_hw"], res


@pytest.mark.parametrize("case_id", with_gpu_cases(GU_CASES, [c for c in GPU_CASES if c.startswith("gu")]))
def test_deferred_consumer_and_down_apply_r(case_id: str, dn_case: Any) -> None:
    res = dn_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["err"] <= 1e-2, res  # (silu of r * gate: one more rounding step than the ref.)
    assert res["slot_err"] <= 1e-5, res
    assert res["h_exact"] and res["h_kept"], res
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"


def test_argument_checks(dn_case: Any) -> None:
    res = dn_case("checks")
    assert "error" not in res, res.get("error")
    assert res == {name: "ValueError" for name in res}, res
    assert set(res) >= {"same_h", "finish_no_defer", "x_norm_alone", "perm", "with_x_sums", "slot_small"}


def test_forward_defers_both_norms_and_falls_back(dn_case: Any) -> None:
    res = dn_case("forward")
    assert "error" not in res, res.get("error")
    got = res["dn"]
    assert got["finite"] and got["err"] <= 1e-2, got
    # per layer: qkv (layer 1 only) with dnorm, o deferred, gate/up with dnorm, down with x_norm; norms: layer 0's
    # input norm and the final norm only
    assert got["calls"] == ["defer", "dn", "xnorm", "dn", "defer", "dn", "xnorm", "norm_sums"] or got["calls"] == [
        "norm", "defer", "dn", "xnorm", "dn", "defer", "dn", "xnorm", "norm_sums"], got  # fmt: skip
    assert got["dirty"] == 0
    for name in ("lora", "down_nosplit", "qkv_not_row", "no_row_attention"):
        assert res[name] == dict(same=True, dn_calls=0), (name, res[name])


@pytest.mark.parametrize("kind", ("hgemvr", "hgemvrb"))
def test_pdl_order_of_the_dn_launches(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Offline sm_90 PTX (kernels.pdl's rules, test_pdl_ptx_order's checker): the consumer GEMVs with dnorm (self-
    finishing and deferred) and the down GEMV with x_norm load only weights before their wait (never the producer's
    sums, h, the norm weight's neighbours or the slots) and store nothing before it."""
    from inlaid_worker.kernels.deferred_norm import down_xnorm, gemv_dnorm
    from test_pdl_ptx_order import GEMV_OK, _check, _record, weight  # type: ignore[import-not-found]

    w_q, w_gu, w_d = weight(128, 128, 4), weight(128, 256, 4), weight(128, 64, 4)
    h = torch.zeros(1, 128, dtype=torch.float16)
    sums, g, slot = torch.zeros(1, 128), torch.ones(128, dtype=torch.float16), torch.zeros(16)
    cfg = _cfg(kind, 1, 64, 2)

    def step() -> None:
        gemv_dnorm(sums, h, torch.zeros_like(h), g, w_q, cfg, slot, 1e-5)
        gu = gemv_dnorm(sums, h, torch.zeros_like(h), g, w_gu, cfg, slot, 1e-5, region=torch.zeros(256))
        down_xnorm(gu, w_d, _cfg("hgemvr", 1, 64, 2), slot, 128, 1e-5, torch.zeros(64))

    seen = _record(monkeypatch, step)
    assert [(kw["DNORM"], kw["XNORM"]) for _, _, kw in seen] == [(2, False), (1, False), (0, True)]
    assert _check(seen, {"_hgemvr_kernel": GEMV_OK - {"perm_ptr"}}) >= 3


if __name__ == "__main__":
    main([*QKV_CASES, *GU_CASES, "checks", "forward"], run_case)
