"""TCSX_XP for tcl picks (session 18, issue 4): a quant_tcl GEMM ("tcl" / "tclp" / "tcls") takes x already in the wgmma
operand's K order (quant_matmul.launch_tcl_kind(xp=...)), so quant_tcl's pre-pass (tcl_permute) does not run; for 4-bit
weights without act-order that order is quant_tcsx's, which fused_norm.add_rms_norm(operand=True) and
silu_mul(operand=True) write (test_tcsx_xp.py checks those bit for bit). model.llama_fast plumbs it where the pick is a
tcl kind at an M bucket of TCL_XP_BUCKETS, and looks the picks up once per weight shape and forward (_XpPicks).

Checks: tcl's pre-pass writes the tcsx order; tcl on xp equals tcl with its pre-pass (bit for bit without split-K; with
split-K, fp32 atomics, to rounding); a decode step of a tiny int4 Llama with mixed picks (qkv tcsx, gate/up tcl, o tcl,
down "tc") gives the same hidden states and KV cache with the plumbing off, on without tcl, and on with tcl, and takes
xp exactly at the tcsx consumer, plus the tcl one when its bucket is listed (never o: its x is the attention's). On
CUDA in-process (the Gluon kernel on sm_90), on the CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a
script; the GEMM is quant_tc's twin there).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cases import ON_SM90
from hgemv_variants import case_runner, main

CASES = ("dispatch", "dispatch-split", "forward-mixed")
GPU_CASES = ("dispatch-7b-gu", "dispatch-13b-down")


def _weight(device: str, k: int, n: int, act: bool = False, bits: int = 4) -> Any:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    raw = make_gptq(k, n, bits, 128, False, act, 1)
    return prepare_gptq_weight(**{a: t.to(device) if torch.is_tensor(t) else t for a, t in raw.items()}, bits=bits,
                               group_size=128, sym=False)  # fmt: skip


def _dispatch(device: str, k: int, n: int, m: int, block_m: int, split: int) -> dict[str, Any]:
    from inlaid_worker.kernels.quant_matmul import dequant_matmul, launch_tcl_kind
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.quant_tcl import tcl_permute, x_order

    torch.manual_seed(0)
    w = _weight(device, k, n)
    x = torch.randn(m, k, device=device).half()
    cfg = QMMConfig(block_m, 64, 128, split, 4, 2, True, "tcl")
    y0 = torch.empty(m, n, device=device, dtype=torch.float16)
    y1 = torch.empty_like(y0)
    xp = tcl_permute(x, w)
    launch_tcl_kind(x, w, cfg, y0)  # the pre-pass inside the call
    launch_tcl_kind(None, w, cfg, y1, xp=xp)
    ref = torch.empty_like(y0)
    dequant_matmul(x, w, ref)
    try:
        launch_tcl_kind(None, w, cfg, y1)
        refused = False
    except ValueError:
        refused = True
    return dict(equal=torch.equal(y0, y1), diff=float((y1.float() - y0.float()).norm() / y0.float().norm()),
                err=float((y1.float() - ref.float()).norm() / ref.float().norm()),
                tcsx_order=torch.equal(xp, x[:, x_order(k, None, x.device)]), finite=bool(torch.isfinite(y1).all()),
                refused=refused)  # fmt: skip


def _forward_mixed(device: str) -> dict[str, Any]:
    """Two layers of the tiny int4 Llama (hidden 128, intermediate 256, 2 rows), decode fusion "none"; picks by module
    (qkv tcsx, o and gate/up tcl, down "tc"; both quant_matmul's and llama_fast's tuner lookups), M bucket 2 listed in
    TCL_XP_BUCKETS or not. Runs: "off" (INLAID_TCSX_XP=0), "tcsx" (on, no tcl bucket), "tcl" (on, bucket listed)."""
    import os

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig, m_bucket
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 2)
    for layer in w.layers:
        layer.input_norm.copy_(torch.rand(c.hidden_size) + 0.5)
    kinds = {"qkv": QMMConfig(32, 64, 128, 1, 4, 4, False, "tcsx"), "o": QMMConfig(64, 64, 128, 1, 4, 2, True, "tcl"),
             "gate_up": QMMConfig(64, 64, 128, 1, 4, 2, True, "tcl"), "down": QMMConfig(32, 64, 128, 1, 4, 1, True, "tc")}  # fmt: skip
    names = {id(getattr(layer, m).parts[0]): m for layer in w.layers for m in kinds}
    saved = (quant_matmul.tuned_config, llama_fast.launch_tcsx_kind, llama_fast.launch_tcl_kind,
             llama_fast.TCL_XP_BUCKETS, os.environ.get("INLAID_TCSX_XP"))  # fmt: skip
    calls: list[tuple[str, bool]] = []

    def spy(real: Any) -> Any:
        def launch(x2: Any, wp: Any, cfg: Any, y: Any, xp: Any = None) -> None:
            calls.append((cfg.kind, xp is not None))
            real(x2, wp, cfg, y, xp=xp)

        return launch

    quant_matmul.tuned_config = llama_fast.tuned_config = lambda x2, wp: kinds[names[id(wp)]]  # type: ignore[assignment]
    llama_fast.launch_tcsx_kind = spy(saved[1])  # type: ignore[assignment]
    llama_fast.launch_tcl_kind = spy(saved[2])  # type: ignore[assignment]
    out: dict[str, Any] = {}
    try:
        for run, env, buckets in (("off", "0", frozenset()), ("tcsx", "1", frozenset()),
                                  ("tcl", "1", frozenset({m_bucket(2)}))):  # fmt: skip
            os.environ["INLAID_TCSX_XP"] = env
            llama_fast.TCL_XP_BUCKETS = buckets  # type: ignore[misc]
            calls.clear()
            kv = d["kv"].clone()
            hidden = forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], kv,
                                  DecodeLayout(d["tables"], d["lens"], 1, "none"), None)  # fmt: skip
            out[run] = (hidden, kv, list(calls))
    finally:
        quant_matmul.tuned_config = llama_fast.tuned_config = saved[0]  # type: ignore[assignment]
        llama_fast.launch_tcsx_kind, llama_fast.launch_tcl_kind = saved[1], saved[2]  # type: ignore[assignment]
        llama_fast.TCL_XP_BUCKETS = saved[3]  # type: ignore[misc]
        if saved[4] is None:
            os.environ.pop("INLAID_TCSX_XP", None)
        else:
            os.environ["INLAID_TCSX_XP"] = saved[4]
    base = out["off"]
    return dict(equal=[torch.equal(base[0], out[r][0]) for r in ("tcsx", "tcl")],
                kv_equal=[torch.equal(base[1], out[r][1]) for r in ("tcsx", "tcl")],
                calls={r: v[2] for r, v in out.items()}, finite=bool(torch.isfinite(out["tcl"][0]).all()),
                rows=int(base[0].shape[0]))  # fmt: skip


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "dispatch":
        return _dispatch(device, 256, 192, 40, 64, 1)
    if case_id == "dispatch-split":
        return _dispatch(device, 512, 128, 72, 64, 2)
    if case_id == "dispatch-7b-gu":  # the H200 table's tcl pick at M bucket 128: 7B gate/up
        return _dispatch(device, 4096, 22016, 128, 128, 1)
    if case_id == "dispatch-13b-down":  # 13B down at M bucket 128: split 4
        return _dispatch(device, 13824, 5120, 128, 128, 4)
    if case_id == "forward-mixed":
        return _forward_mixed(device)
    raise KeyError(case_id)


@pytest.fixture(scope="module")
def xp_case() -> Any:
    return case_runner(__file__, run_case, "tcl xp", 600)


def _gpu(ids: tuple[str, ...]) -> list[Any]:
    return [pytest.param(c, marks=pytest.mark.skipif(not ON_SM90, reason="sm_90 sizes")) for c in ids]


@pytest.mark.parametrize("case_id", ["dispatch", "dispatch-split", *_gpu(GPU_CASES)])
def test_tcl_on_xp_equals_tcl_with_its_prepass(case_id: str, xp_case: Any) -> None:
    if torch.cuda.is_available() and not ON_SM90:
        pytest.skip("tcl is sm_90 only")
    res = xp_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["tcsx_order"], "tcl's pre-pass must write quant_tcsx's order (what the norm / silu_mul write)"
    assert res["refused"], "launch_tcl_kind without x2 and xp must be refused"
    assert res["finite"] and res["err"] < 5e-3, res
    split_on_gpu = torch.cuda.is_available() and case_id == "dispatch-13b-down"  # fp32 atomics: order varies
    assert res["equal"] or (split_on_gpu and res["diff"] < 1e-3), res


def test_decode_step_with_mixed_picks_takes_xp_only_at_tcsx_and_listed_tcl_consumers(xp_case: Any) -> None:
    if torch.cuda.is_available() and not ON_SM90:
        pytest.skip("tcsx / tcl are sm_90 only")
    res = xp_case("forward-mixed")
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["rows"] == 2, res
    assert res["equal"] == [True, True] and res["kv_equal"] == [True, True], res
    calls = res["calls"]
    # qkv (tcsx) of both layers on xp; gate/up (tcl) too once bucket 2 is listed; o (tcl) through quant_matmul with
    # its own pre-pass (not llama_fast's launches), down ("tc") never
    assert [list(c) for c in calls["off"]] == [], calls
    assert [list(c) for c in calls["tcsx"]] == [["tcsx", True]] * 2, calls
    assert [list(c) for c in calls["tcl"]] == [["tcsx", True], ["tcl", True]] * 2, calls


def test_xp_picks_take_tcl_only_at_listed_buckets_and_look_up_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.kernels.quant_matmul import launch_xp_kind
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.quant_weights import QuantMatrix

    looked: list[int] = []
    kind = {"k": "tcl"}

    def pick(x2: torch.Tensor, wp: Any) -> QMMConfig:
        looked.append(id(wp))
        return QMMConfig(128, 64, 128, 1, 4, 2, True, kind["k"])

    monkeypatch.setattr(llama_fast, "tuned_config", pick)
    monkeypatch.setattr(llama_fast, "TCL_XP_BUCKETS", frozenset({128}))
    a, b = QuantMatrix((_weight("cpu", 256, 128),)), QuantMatrix((_weight("cpu", 256, 128),))
    x128, x64 = torch.zeros(128, 256, dtype=torch.float16), torch.zeros(64, 256, dtype=torch.float16)
    assert llama_fast._xp_pick(x128, a) is not None
    assert llama_fast._xp_pick(x64, a) is None  # bucket 64 not listed: tcl keeps its pre-pass
    assert llama_fast._xp_pick(x128, QuantMatrix((_weight("cpu", 256, 128, act=True),))) is None  # act-order
    assert llama_fast._xp_pick(x128, QuantMatrix((_weight("cpu", 256, 128, bits=3),))) is None  # 3-bit: its own order
    kind["k"] = "tcsx"
    assert llama_fast._xp_pick(x64, a) is not None  # tcsx: every bucket
    kind["k"] = "tcl"
    looked.clear()
    picks = llama_fast._XpPicks()
    pa, pb = picks(x128, a), picks(x128, b)  # two layers' weights of one shape: one lookup
    assert pa is not None and pb is not None and pa[0] is a.parts[0] and pb[0] is b.parts[0] and len(looked) == 1
    kind["k"] = "tc"  # a table change: the next forward's lookup sees it
    assert picks(x128, a) is not None and len(looked) == 1
    assert llama_fast._XpPicks()(x128, a) is None and len(looked) == 2
    with pytest.raises(ValueError):
        launch_xp_kind(a.parts[0], QMMConfig(128, 64, 128, 1, 4, 2, True, "tc"), torch.empty(1, 128), x128[:1])


if __name__ == "__main__":
    main(list(CASES), run_case)
