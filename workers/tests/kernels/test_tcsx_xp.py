"""TCSX_XP (session 17, issue 4): the producers of a tcsx GEMM's x write the wgmma operand's K order themselves
(fused_norm.add_rms_norm(operand=True), silu_mul(operand=True)) and the GEMM takes it as xp (quant_matmul.
launch_xp_kind -> launch_tcsx_kind(xp=...)), so quant_tcsx's pre-pass (quant_tcl.permute_x) does not run;
model.llama_fast plumbs it where the tuner's pick is a tcsx kind (env INLAID_TCSX_XP).

Every check is bit for bit: the operand-ordered outputs equal the plain outputs gathered by x_order (the pre-pass's
index map) and permute_x's own result; the GEMM on xp equals the GEMM with its pre-pass; a decode step of a tiny int4
Llama with every GEMM forced to tcsx gives the same hidden states with the plumbing on and off, with all six
qkv / gate-up / down GEMMs of its two layers taking xp. On CUDA in-process (the Gluon kernel on sm_90), on the CPU once
in a subprocess under TRITON_INTERPRET=1 (this file as a script; the GEMM is quant_tc's twin there).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cases import ON_SM90
from hgemv_variants import case_runner, main

CASES = ("norm", "silu", "dispatch", "forward", "forward-mixed")
GPU_CASES = ("norm-7b", "silu-13b", "dispatch-7b-down")


def _norm(device: str, n: int) -> dict[str, Any]:
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_tcl import permute_x, x_order

    torch.manual_seed(0)
    order = x_order(n, None, torch.device(device))
    out: dict[str, Any] = {}
    for res in (False, True):
        x = (torch.randn(5, n, device=device) * 2).half()
        g = (torch.rand(n, device=device) + 0.5).half()
        h0 = torch.randn(5, n, device=device).half()
        h1, h2 = h0.clone(), h0.clone()
        plain = add_rms_norm(x, g, 1e-5, residual=h1 if res else None)
        xp = add_rms_norm(x, g, 1e-5, residual=h2 if res else None, operand=True)
        out[f"res{int(res)}"] = dict(gather=torch.equal(xp, plain[:, order]), prepass=torch.equal(xp, permute_x(plain, None)),
                                     residual=torch.equal(h1, h2), moved=not torch.equal(xp, plain))  # fmt: skip
    try:
        add_rms_norm(torch.zeros(1, 64, device=device).half(), torch.ones(64, device=device).half(), 1e-5, operand=True)
        out["refused"] = False
    except ValueError:
        out["refused"] = True
    return out


def _silu(device: str, inters: tuple[int, ...]) -> dict[str, Any]:
    from inlaid_worker.kernels.quant_tcl import permute_x, x_order
    from inlaid_worker.kernels.silu_mul import silu_mul

    torch.manual_seed(0)
    out: dict[str, Any] = {}
    for inter in inters:  # 384: one 512-column block, partly masked; 1280 / 13824: 1024-column blocks, the last partial
        gu = (torch.randn(3, 2 * inter, device=device) * 3).half()
        plain, xp = silu_mul(gu), silu_mul(gu, operand=True)
        order = x_order(inter, None, torch.device(device))
        out[str(inter)] = dict(gather=torch.equal(xp, plain[:, order]), prepass=torch.equal(xp, permute_x(plain, None)))
    try:
        silu_mul(torch.zeros(1, 128, device=device).half(), operand=True)
        out["refused"] = False
    except ValueError:
        out["refused"] = True
    return out


def _dispatch(device: str, k: int, n: int, m: int, kind: str, bm: int) -> dict[str, Any]:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul import launch_tcsx_kind
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_tcsx import tcsx_permute

    torch.manual_seed(0)
    raw = make_gptq(k, n, 4, 128, False, False, 1)
    w = prepare_gptq_weight(**{a: t.to(device) if torch.is_tensor(t) else t for a, t in raw.items()}, bits=4,
                            group_size=128, sym=False)  # fmt: skip
    x = torch.randn(m, k, device=device).half()
    cfg = QMMConfig(bm, 128, 128, 1, 4, 4, False, kind)
    y0 = torch.empty(m, n, device=device, dtype=torch.float16)
    y1 = torch.empty_like(y0)
    launch_tcsx_kind(x, w, cfg, y0)  # the pre-pass inside the call
    launch_tcsx_kind(None, w, cfg, y1, xp=tcsx_permute(x, w))
    ref = x.float() @ _dense(w)
    return dict(equal=torch.equal(y0, y1), err=float((y1.float() - ref).norm() / ref.norm()),
                finite=bool(torch.isfinite(y1).all()))  # fmt: skip


def _dense(w: Any) -> torch.Tensor:
    from inlaid_worker.kernels.quant_matmul import dequant_matmul

    eye = torch.eye(w.in_features, device=w.qweight.device, dtype=torch.float16)
    out = torch.empty(w.in_features, w.out_features, device=eye.device, dtype=torch.float16)
    dequant_matmul(eye, w, out)
    return out.float()


def _forward(device: str, mixed: bool = False) -> dict[str, Any]:
    """Two layers of the tiny int4 Llama (hidden 128, intermediate 256), decode fusion "none", every GEMM's pick
    forced to tcsx (both quant_matmul's and llama_fast's tuner lookups): INLAID_TCSX_XP=0 vs 1. mixed: tcsx only for
    gate/up, down and o ("tc" for qkv), so producers write operand order for some consumers only (o never takes xp).
    The picks follow the module (so its shape), as the tuner's do: llama_fast looks them up once per weight shape and
    forward (session 18)."""
    import os

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 2)
    for layer in w.layers:
        layer.input_norm.copy_(torch.rand(c.hidden_size) + 0.5)
    cfg = QMMConfig(32, 64, 128, 1, 4, 4, False, "tcsx")
    tc = QMMConfig(32, 64, 128, 1, 4, 1, True, "tc")
    names = {id(getattr(layer, m).parts[0]): (i, m) for i, layer in enumerate(w.layers)
             for m in ("qkv", "o", "gate_up", "down")}  # fmt: skip
    chosen = {"gate_up", "down", "o"}
    real_tc, real_launch, env0 = quant_matmul.tuned_config, llama_fast.launch_xp_kind, os.environ.get("INLAID_TCSX_XP")
    calls: list[bool] = []

    def spy(wp: Any, c2: Any, y: Any, xp: Any) -> None:  # llama_fast's GEMMs on an operand-ordered x
        calls.append(c2.kind == "tcsx" and xp is not None)
        real_launch(wp, c2, y, xp)

    def pick(x2: Any, wp: Any) -> QMMConfig:
        return cfg if not mixed or names.get(id(wp), (0, ""))[1] in chosen else tc

    quant_matmul.tuned_config = llama_fast.tuned_config = pick  # type: ignore[assignment]
    llama_fast.launch_xp_kind = spy  # type: ignore[assignment]
    out: dict[str, Any] = {}
    try:
        for on in ("0", "1"):
            os.environ["INLAID_TCSX_XP"] = on
            calls.clear()
            kv = d["kv"].clone()
            hidden = forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], kv,
                                  DecodeLayout(d["tables"], d["lens"], 1, "none"), None)  # fmt: skip
            out[on] = (hidden, kv, list(calls))
    finally:
        quant_matmul.tuned_config = llama_fast.tuned_config = real_tc  # type: ignore[assignment]
        llama_fast.launch_xp_kind = real_launch  # type: ignore[assignment]
        if env0 is None:
            os.environ.pop("INLAID_TCSX_XP", None)
        else:
            os.environ["INLAID_TCSX_XP"] = env0
    return dict(equal=torch.equal(out["0"][0], out["1"][0]), kv_equal=torch.equal(out["0"][1], out["1"][1]),
                off_calls=out["0"][2], on_calls=out["1"][2], finite=bool(torch.isfinite(out["1"][0]).all()),
                rows=int(out["1"][0].shape[0]))  # fmt: skip


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "norm":
        return _norm(device, 384)
    if case_id == "norm-7b":
        return _norm(device, 4096)
    if case_id == "silu":
        return _silu(device, (384, 1280))
    if case_id == "silu-13b":
        return _silu(device, (11008, 13824))
    if case_id == "dispatch":
        return _dispatch(device, 256, 192, 40, "tcsx2", 32)
    if case_id == "dispatch-7b-down":
        return _dispatch(device, 11008, 4096, 64, "tcsx2", 64)
    if case_id == "forward":
        return _forward(device)
    if case_id == "forward-mixed":
        return _forward(device, mixed=True)
    raise KeyError(case_id)


@pytest.fixture(scope="module")
def xp_case() -> Any:
    return case_runner(__file__, run_case, "tcsx xp", 600)


def _gpu(ids: tuple[str, ...]) -> list[Any]:
    return [pytest.param(c, marks=pytest.mark.skipif(not ON_SM90, reason="sm_90 sizes")) for c in ids]


@pytest.mark.parametrize("case_id", ["norm", *_gpu(("norm-7b",))])
def test_norm_writes_the_prepass_order(case_id: str, xp_case: Any) -> None:
    res = xp_case(case_id)
    assert "error" not in res, res.get("error")
    for key in ("res0", "res1"):
        assert res[key] == dict(gather=True, prepass=True, residual=True, moved=True), (key, res)
    assert res["refused"], "n not a multiple of 128 must be refused"


@pytest.mark.parametrize("case_id", ["silu", *_gpu(("silu-13b",))])
def test_silu_mul_writes_the_prepass_order(case_id: str, xp_case: Any) -> None:
    res = xp_case(case_id)
    assert "error" not in res, res.get("error")
    assert res.pop("refused"), "I not a multiple of 128 must be refused"
    assert res and all(v == dict(gather=True, prepass=True) for v in res.values()), res


@pytest.mark.parametrize("case_id", ["dispatch", *_gpu(("dispatch-7b-down",))])
def test_tcsx_on_xp_equals_tcsx_with_its_prepass(case_id: str, xp_case: Any) -> None:
    res = xp_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["equal"] and res["finite"] and res["err"] < 5e-3, res


def test_decode_step_with_xp_equals_without(xp_case: Any) -> None:
    if torch.cuda.is_available() and not ON_SM90:
        pytest.skip("tcsx is sm_90 only")
    res = xp_case("forward")
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["rows"] == 2, res
    assert res["equal"] and res["kv_equal"], res
    # qkv, gate/up and down of both layers: the pre-pass without the plumbing, xp with it
    assert res["off_calls"] == [] and res["on_calls"] == [True] * 6, res


def test_decode_step_with_mixed_picks_takes_xp_only_where_the_consumer_is_tcsx(xp_case: Any) -> None:
    if torch.cuda.is_available() and not ON_SM90:
        pytest.skip("tcsx is sm_90 only")
    res = xp_case("forward-mixed")
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["equal"] and res["kv_equal"], res
    # both layers' gate/up and down on xp (llama_fast's tcsx calls); o is tcsx on plain x through quant_matmul (its
    # own pre-pass), the "tc" qkv too
    assert res["off_calls"] == [] and res["on_calls"] == [True] * 4, res


def test_xp_pick_needs_a_one_part_tcsx_weight_without_act_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.quant_weights import QuantMatrix

    def weight(act: bool) -> Any:
        return prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, act, 1), bits=4, group_size=128, sym=False)

    kind = {"k": "tcsx2"}
    monkeypatch.setattr(llama_fast, "tuned_config", lambda x2, w: QMMConfig(32, 128, 128, 1, 4, 4, False, kind["k"]))
    x = torch.zeros(3, 256, dtype=torch.float16)
    plain, act = weight(False), weight(True)
    assert llama_fast._xp_pick(x, QuantMatrix((plain,))) is not None
    assert llama_fast._xp_pick(x, QuantMatrix((act,))) is None  # act-order: the pre-pass's gather stays
    assert llama_fast._xp_pick(x, QuantMatrix((plain, plain))) is None  # two parts: quant_matmul per part
    assert llama_fast._xp_pick(x, torch.zeros(128, 256)) is None  # dense
    kind["k"] = "tcl"
    assert llama_fast._xp_pick(x, QuantMatrix((plain,))) is None
    monkeypatch.setenv("INLAID_TCSX_XP", "0")
    assert not llama_fast.tcsx_xp_on()
    monkeypatch.setenv("INLAID_TCSX_XP", "1")
    assert llama_fast.tcsx_xp_on()
    monkeypatch.delenv("INLAID_TCSX_XP")
    assert llama_fast.tcsx_xp_on() is llama_fast.TCSX_XP_DEFAULT


if __name__ == "__main__":
    main(list(CASES), run_case)
