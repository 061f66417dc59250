"""The "+dn2" decode fusion (kernels.deferred_norm.gemv_dnorm2): the consumer GEMV loads the producer's fp32 sums, the
residual h and the norm weight in the plain x-pair layout, multiplies its weights by u = fp16(h' w),
h' = fp16(h + fp16(sums)), unscaled, and defers its sums; one extra N column of programs stores h' and the rows'
sum(h'^2) into a slot; the next kernel applies r = rsqrt(slot / K + eps) (down's x_norm; the row attention's rnorm).

Kernel cases: the consumer's deferred sums times r against add_rms_norm + the same GEMV on x, for the row kinds
(look-ahead with 1-4 tiles a program, burst with tiles past the program's last, pin; block_k 64 / 128; 1-3 rows; both
dn2 modes: u formed where a tile is used or where it is loaded); h' stored exactly, h untouched, the slot's
sum(h'^2), the split-K workspace and counters left zero. Numerics: a large residual whose |h' w| stays below fp16's
top (4.5e4) is as accurate as today; one past it (9e4: today's x is finite) gives a non-finite result (the documented
limit of the unscaled u); a tiny residual (4e-4, u's products in fp16's subnormals) bounds that error. The gate/up
pair with down's x_norm against today's "+g" pair; the row attention reading the sums with rnorm against reading
fp16(r sums); the argument checks; a 2-layer decode step through forward_fast: "swiglu+cfin+q+g+dn2" against
"swiglu+cfin+q+g" and its launches, and the fallbacks (LoRA, a qkv pick that cannot defer), which run
"swiglu+cfin+q+g" bit for bit. On CUDA in-process; on the CPU once in a subprocess under TRITON_INTERPRET=1 (this
file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case, with_gpu_cases

# (K, N, M, kind, block_m, block_k, split, h scale, dn2 mode)
QKV_CASES: dict[str, tuple] = {
    "m1-split2": (256, 128, 1, "hgemvr", 1, 64, 2, 5.0, 1),
    "m1-split2-eager": (256, 128, 1, "hgemvr", 1, 64, 2, 5.0, 2),
    "m1-4tiles": (512, 128, 1, "hgemvr", 1, 64, 2, 5.0, 1),  # 4 tiles a program: the look-ahead loop
    "m3-burst": (256, 128, 3, "hgemvrb", 4, 64, 2, 5.0, 1),  # 2 tiles a program of 3 (past the last: adds 0)
    "m2-k128": (512, 128, 2, "hgemvr", 2, 128, 2, 5.0, 1),
    "m1-pin": (256, 128, 1, "hgemvrq", 1, 128, 2, 5.0, 1),
    "m1-large": (256, 128, 1, "hgemvr", 1, 64, 2, 3.0e4, 1),  # |h' w| up to 4.5e4: in range
    "m1-huge": (256, 128, 1, "hgemvr", 1, 64, 2, 6.0e4, 1),  # |h' w| 9e4 > 65504: u overflows (documented)
    "m1-tiny": (256, 128, 1, "hgemvr", 1, 64, 2, 4.0e-4, 1),  # u's half2 products in fp16's subnormals
}
# (K, I, N, M, gate/up (kind, block_m, block_k, split), down (kind, block_m, block_k, split))
GU_CASES: dict[str, tuple] = {
    "gu-m1": (128, 128, 64, 1, ("hgemvr", 1, 64, 2), ("hgemvr", 1, 64, 2)),
    "gu-m3-burst": (256, 256, 64, 3, ("hgemvrb", 4, 64, 2), ("hgemvrq", 4, 128, 2)),
}
GPU_CASES: dict[str, tuple] = {  # the 7B batch-1 picks of the shipped H200 table
    "qkv-7b-m1": (4096, 12288, 1, "hgemvr", 1, 128, 8, 5.0, 1),
    "gu-7b-m1": (4096, 11008, 4096, 1, ("hgemvr", 1, 128, 4), ("hgemvr", 1, 128, 22)),
}
ALL_CASES = {**QKV_CASES, **GU_CASES, **GPU_CASES, "checks": (), "attention": (), "forward": ()}


def _cfg(kind: str, bm: int, bk: int, split: int) -> Any:
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    return QMMConfig(bm, 64, bk, split, 2, 1, False, kind)


def _inputs(case_id: str, m: int, k: int, scale: float, device: str) -> tuple:
    """(producer sums fp32, h fp16, norm weight fp16 in [0.5, 1.5), h' = fp16(h + fp16(sums))). scale > 1e3: h of
    that scale in a few channels (weight 1.5 there), 1 elsewhere (Llama's massive activations)."""
    torch.manual_seed(len(case_id))
    big = scale > 1e3
    sums = torch.randn(m, k, device=device) * (1.0 if big else scale) * 0.5
    h = (torch.randn(m, k, device=device) * (1.0 if big else scale)).half()
    g = (torch.rand(k, device=device) + 0.5).half()
    if big:
        h[:, ::61] = scale
        sums[:, ::61] = 0.0
        g[::61] = 1.5
    return sums, h, g, (h.float() + sums.half().float()).half()


def _dirty() -> int:
    from inlaid_worker.kernels import quant_common

    return sum(int((ws != 0).sum()) + int((cnt != 0).sum()) for ws, cnt in quant_common._WORKSPACES.values())


def run_qkv(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags

    k, n, m, kind, bm, bk, split, scale, mode = ALL_CASES[case_id]
    _, w, _ = make_case(case_id, k, n, m, 128, False, False, "gptq", device)
    cfg = _cfg(kind, bm, bk, split)
    out: dict[str, Any] = dict(err=0.0, slot_err=0.0, h_exact=True, h_kept=True, dirty=0, finite=True, top_hw=0.0)
    saved = dn.DN2_MODE
    try:
        dn.DN2_MODE = mode
        for rep in range(2):  # the second call finds the workspace as the first left it
            sums, h, g, hp = _inputs(case_id + str(rep), m, k, scale, device)
            x = add_rms_norm(hp.clone(), g, 1e-5)  # today's x (the norm kernel on h')
            out["top_hw"] = max(out["top_hw"], float((hp.float() * g.float()).abs().max()))
            ref = torch.empty(m, n, dtype=torch.float16, device=device)
            launch_hgemvr(x, w, bm, 64, bk, split, 2, ref, **hgemvr_flags(kind))
            h0, h_out = h.clone(), torch.zeros_like(h)
            slot, region = torch.zeros(m, device=device), torch.zeros(m * n, device=device)
            s = dn.gemv_dnorm2(sums, h, h_out, g, w, cfg, slot, 1e-5, region)
            r = 1.0 / torch.sqrt(slot / k + 1e-5)
            y = (s * r[:, None]).half()
            out["err"] = max(out["err"], float((y.float() - ref.float()).abs().max() / ref.float().abs().max()))
            ss = (hp.float() ** 2).sum(1)
            out["slot_err"] = max(out["slot_err"], float((slot - ss).abs().max() / ss.max()))
            out["finite"] = out["finite"] and bool(torch.isfinite(y).all())
            out["h_exact"] = out["h_exact"] and bool(torch.equal(h_out, hp))
            out["h_kept"] = out["h_kept"] and bool(torch.equal(h, h0))
            out["dirty"] += _dirty()
    finally:
        dn.DN2_MODE = saved
    return out


def run_gu(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels.consumer_finish import gemv_gu_sums, stand_in_x
    from inlaid_worker.kernels.deferred_norm import down_xnorm, gemv_dnorm2
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
    gu = gemv_dnorm2(sums, h, h_out, g, w_gu, cfg_gu, slot, 1e-5, region)
    ss = (hp.float() ** 2).sum(1)
    d_region = torch.zeros(m * n, device=device)
    d_sums = down_xnorm(gu, w_d, cfg_d, slot, k, 1e-5, d_region)
    top = float(y_ref.float().abs().max())
    return dict(err=float((d_sums.half().float() - y_ref.float()).abs().max()) / top,
                slot_err=float((slot - ss).abs().max() / ss.max()), h_exact=bool(torch.equal(h_out, hp)),
                h_kept=bool(torch.equal(h, h0)), dirty=_dirty(), finite=bool(torch.isfinite(d_sums).all()))  # fmt: skip


def run_attention(device: str) -> dict[str, Any]:
    """row_rope_decode reading fp32 qkv sums with rnorm (each value fp16(r * sum)) against reading the fp16 rows
    fp16(r * sums) (2 rows, 4 heads over 2 KV heads, head dim 32, 40 cached tokens)."""
    from inlaid_worker.kernels.decode_row import row_rope_decode

    torch.manual_seed(7)
    s, heads, kvh, hd, bs, ctx = 2, 4, 2, 32, 16, 40
    k = 128
    qkv = torch.randn(s, (heads + 2 * kvh) * hd, device=device) * 30.0  # sums without r
    slot = torch.tensor([k * 900.0, k * 0.04], device=device)  # rms 30 and 0.2
    r = 1.0 / torch.sqrt(slot / k + 1e-5)
    cos = torch.randn(s, hd, device=device).half()
    sin = torch.randn(s, hd, device=device).half()
    nblk = 8
    kc = torch.randn(nblk, bs, kvh, hd, device=device).half()
    vc = torch.randn(nblk, bs, kvh, hd, device=device).half()
    tables = torch.arange(s * 3, device=device, dtype=torch.int32).reshape(s, 3)
    lens = torch.full((s,), ctx, device=device, dtype=torch.int32)
    slots = (tables[:, (ctx - 1) // bs].long() * bs + (ctx - 1) % bs).to(torch.int64)
    base = {} if device == "cuda" else None
    k1, v1, k2, v2 = kc.clone(), vc.clone(), kc.clone(), vc.clone()
    ref = row_rope_decode((qkv * r[:, None]).half(), cos, sin, slots, k1, v1, tables, lens, 0.1, heads, base=base)
    got = row_rope_decode(qkv, cos, sin, slots, k2, v2, tables, lens, 0.1, heads, base=base, sums=True,
                          rnorm=(slot, k, 1e-5))  # fmt: skip
    bad = {}
    for name, kw in dict(no_sums=dict(rnorm=(slot, k, 1e-5)), short=dict(sums=True, rnorm=(slot[:1], k, 1e-5))).items():
        try:
            row_rope_decode(qkv if name != "no_sums" else qkv.half(), cos, sin, slots, kc.clone(), vc.clone(), tables,
                            lens, 0.1, heads, base=base, **kw)  # fmt: skip
            bad[name] = "ran"
        except ValueError:
            bad[name] = "ValueError"
    return dict(out=float((got.float() - ref.float()).abs().max()), k=float((k2.float() - k1.float()).abs().max()),
                v=float((v2.float() - v1.float()).abs().max()), bad=bad)  # fmt: skip


def run_checks(device: str) -> dict[str, Any]:
    """launch_hgemvr's dnorm2 argument checks: which raise ValueError (before anything is launched)."""
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    k, n, m = 128, 64, 1
    _, w, _ = make_case("checks", k, n, m, 128, False, False, "gptq", device)
    sums, h, g, _ = _inputs("checks", m, k, 1.0, device)
    h_out, slot, y = torch.zeros_like(h), torch.zeros(8, device=device), torch.empty(m, n, dtype=torch.float16,
                                                                                      device=device)  # fmt: skip
    region = torch.zeros(m * n, device=device)
    dn2 = (sums, h, h_out, g, slot, 1e-5)
    ok = dict(finish=True, defer=True, sums=region)
    bad = {
        "no_defer": dict(dnorm2=dn2),
        "finish_only": dict(dnorm2=dn2, finish=True),
        "same_h": dict(dnorm2=(sums, h, h, g, slot, 1e-5), **ok),
        "sums_fp16": dict(dnorm2=(sums.half(), h, h_out, g, slot, 1e-5), **ok),
        "weight_len": dict(dnorm2=(sums, h, h_out, g[:64], slot, 1e-5), **ok),
        "slot_small": dict(dnorm2=(sums, h, h_out, g, torch.zeros(0, device=device), 1e-5), **ok),
        "with_dnorm": dict(dnorm2=dn2, dnorm=dn2, **ok),
        "mode": dict(dnorm2=dn2, dn2_mode=5, **ok),
    }
    out: dict[str, Any] = {}
    for name, kw in bad.items():
        try:
            launch_hgemvr(h, w, 1, 64, 64, 2, 2, y, **kw)
            out[name] = "ran"
        except ValueError:
            out[name] = "ValueError"
    return out


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a 2-layer tiny Llama (hidden 128, intermediate 256) through forward_fast with a
    split-K row GEMV forced for every GEMV (block_k 64: split in two) and the row attention: "swiglu+cfin+q+g+dn2"
    against "swiglu+cfin+q+g", then the fallbacks."""
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
        calls.append("dn2" if kw.get("dnorm2") is not None else "xnorm" if kw.get("x_norm") is not None else "defer")
        return saved[2](*args, **kw)

    def norm_spy(label: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            calls.append(label)
            return fn(*args, **kw)

        return wrapped

    def force(qkv_split: int = 2) -> None:
        def config_for(x2: torch.Tensor, wt: Any) -> QMMConfig:
            qkv = wt.out_features == 256 and wt.in_features == 128  # qkv: 128 + 2 * 64
            return QMMConfig(2, 64, 64, qkv_split if qkv else 2, 2, 1, False, "hgemvr")

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
        base = run("swiglu+cfin+q+g")
        calls.clear()
        got = run("swiglu+cfin+q+g+dn2")
        out["dn2"] = dict(err=float((got - base).norm() / base.norm()), calls=list(calls),
                          finite=bool(torch.isfinite(got).all()), dirty=_dirty())  # fmt: skip
        for name, qkv_split, lora in (("lora", 2, Lora()), ("qkv_nosplit", 1, None)):
            force(qkv_split)
            ref = run("swiglu+cfin+q+g", lora)
            calls.clear()
            got = run("swiglu+cfin+q+g+dn2", lora)
            out[name] = dict(same=bool(torch.equal(got, ref)), dn2_calls=sum(x in ("dn2", "xnorm") for x in calls))
    finally:
        (cf.config_for, dn.config_for, dn.launch_hgemvr, llama_fast.row_rope_for, llama_fast.add_rms_norm,
         llama_fast.add_rms_norm_sums, cf.add_rms_norm_sums) = saved  # fmt: skip
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "forward":
        return run_forward(device)
    if case_id == "checks":
        return run_checks(device)
    if case_id == "attention":
        return run_attention(device)
    return run_gu(case_id, device) if case_id.startswith("gu") else run_qkv(case_id, device)


@pytest.fixture(scope="module")
def dn2_case() -> Any:
    return case_runner(__file__, run_case, "deferred norm 2", 600)


def _tol() -> float:
    # fp16 y: a few ulps of the largest value (r applied to the fp32 sum instead of to x: another rounding order)
    return 4e-3 if torch.cuda.is_available() else 3e-3


@pytest.mark.parametrize("case_id", with_gpu_cases(QKV_CASES, [c for c in GPU_CASES if c.startswith("qkv")]))
def test_consumer_sums_times_r_match_norm_then_gemv(case_id: str, dn2_case: Any) -> None:
    res = dn2_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["h_exact"] and res["h_kept"], res
    assert res["slot_err"] <= 1e-5, res
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"
    if case_id.endswith("huge"):  # the documented limit: |h' w| past fp16's top -> u = inf, a non-finite output
        assert res["top_hw"] > 65504 and not res["finite"], res
        return
    assert res["finite"], res
    if case_id.endswith("large"):
        assert 4e4 < res["top_hw"] < 65504, res
    # tiny: u ~ 4e-4, its half2 products ~ 1e-7 are fp16 subnormals (spacing 6e-8): a coarser but bounded error
    assert res["err"] <= (3e-2 if case_id.endswith("tiny") else _tol()), res


@pytest.mark.parametrize("case_id", with_gpu_cases(GU_CASES, [c for c in GPU_CASES if c.startswith("gu")]))
def test_deferred_gate_up_and_down_apply_r(case_id: str, dn2_case: Any) -> None:
    res = dn2_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["err"] <= 1e-2, res  # (silu of r * gate: one more rounding step than the ref.)
    assert res["slot_err"] <= 1e-5, res
    assert res["h_exact"] and res["h_kept"], res
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"


def test_row_attention_applies_r_to_the_sums(dn2_case: Any) -> None:
    res = dn2_case("attention")
    assert "error" not in res, res.get("error")
    tol = 1e-2 if torch.cuda.is_available() else 1e-3  # (CUDA: rsqrt / division approximate: a rare fp16 ulp)
    assert res["out"] <= tol and res["k"] <= tol * 30 and res["v"] <= tol * 30, res
    assert res["bad"] == dict(no_sums="ValueError", short="ValueError"), res


def test_argument_checks(dn2_case: Any) -> None:
    res = dn2_case("checks")
    assert "error" not in res, res.get("error")
    assert res == {name: "ValueError" for name in res} and len(res) == 8, res


def test_forward_defers_both_norms_and_falls_back(dn2_case: Any) -> None:
    res = dn2_case("forward")
    assert "error" not in res, res.get("error")
    got = res["dn2"]
    assert got["finite"] and got["err"] <= 1e-2, got
    # layer 0: its input norm, qkv on x (no spy: linear), o deferred, gate/up dn2, down x_norm; layer 1: qkv dn2 too;
    # then the final norm on the last down's sums
    assert got["calls"] == ["norm", "defer", "dn2", "xnorm", "dn2", "defer", "dn2", "xnorm", "norm_sums"], got
    assert got["dirty"] == 0
    for name in ("lora", "qkv_nosplit"):
        assert res[name] == dict(same=True, dn2_calls=0), (name, res[name])


@pytest.mark.parametrize("mode", (1, 2))
def test_pdl_order_of_the_dn2_launches(monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    """Offline sm_90 PTX (kernels.pdl's rules, test_pdl_ptx_order's checker): the consumer GEMV with dnorm2 loads only
    weights before its wait (never the producer's sums, h, the norm weight or the slot) and stores nothing before it;
    the row attention with rnorm reads its slot after the wait (early loads as with plain sums)."""
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from pdl_ptx_order import analyze  # type: ignore[import-not-found]
    from test_consumer_finish_q import _step  # type: ignore[import-not-found]
    from test_pdl_ptx_order import GEMV_OK, _check, _ptx, _record, weight  # type: ignore[import-not-found]

    heads, d = 4, 32
    w_q = weight(128, 3 * heads * d, 4)
    h = torch.zeros(1, 128, dtype=torch.float16)
    sums, g, slot = torch.zeros(1, 128), torch.ones(128, dtype=torch.float16), torch.zeros(16)
    st = _step(1, heads, heads, d, "cpu")
    monkeypatch.setattr(dn, "DN2_MODE", mode)

    def step() -> None:
        qs = dn.gemv_dnorm2(sums, h, torch.zeros_like(h), g, w_q, _cfg("hgemvr", 1, 64, 2), slot, 1e-5,
                            torch.zeros(3 * heads * d))  # fmt: skip
        row_rope_decode(qs, st["cos"], st["sin"], st["slots"], st["k"], st["v"], st["tables"], st["lens"], d**-0.5,
                        heads, num_parts=2, sums=True, rnorm=(slot, 128, 1e-5))  # fmt: skip

    seen = _record(monkeypatch, step)
    assert [fn.__name__ for fn, _, _ in seen] == ["_hgemvr_kernel", "_row_kernel"]
    assert seen[0][2]["DNORM2"] == mode and seen[1][2]["SUMS"] == 2
    assert _check([seen[0]], {"_hgemvr_kernel": GEMV_OK - {"perm_ptr"}}) >= 1
    fn, args, kwargs = seen[1]  # (a partition past the context exits unwaited: decode_row's documented exception)
    ptx, names = _ptx(fn, args, dict(kwargs))
    rep = analyze(ptx)
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names) and names[i].endswith("_ptr")}
    assert rep.waits >= 1 and not rep.early_writes and early == {"ctx_ptr", "bt_ptr", "k_ptr", "v_ptr"}, early


if __name__ == "__main__":
    main([*QKV_CASES, *GU_CASES, "checks", "attention", "forward"], run_case)
