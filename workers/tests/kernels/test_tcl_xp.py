"""TCSX_XP for tcl picks (session 18, issue 4): a quant_tcl GEMM ("tcl" / "tclp" / "tcls") takes x already in the wgmma
operand's K order (quant_matmul.launch_tcl_kind(xp=...)), so quant_tcl's pre-pass (tcl_permute) does not run; for 4-bit
weights without act-order that order is quant_tcsx's, which fused_norm.add_rms_norm(operand=True) and
silu_mul(operand=True) write (test_tcsx_xp.py checks those bit for bit). model.llama_fast plumbs it where the pick is a
tcl kind at an M bucket of TCL_XP_BUCKETS, and looks the picks up once per weight shape and forward (_XpPicks).

Checks: tcl's pre-pass writes the tcsx order; tcl on xp equals tcl with its pre-pass (bit for bit without split-K; with
split-K, fp32 atomics, to rounding); a decode step of a tiny int4 Llama with mixed picks (qkv tcsx, gate/up tcl, o tcl,
down "tc") gives the same hidden states and KV cache with the plumbing off, on without tcl, and on with tcl, and takes
xp exactly at the tcsx consumer, plus the tcl one when its bucket is listed (never o: its x is the attention's); one
with tcl kinds everywhere (qkv tcl, gate/up tclp split 2, down tcls split 2, o tcl) takes xp at qkv (after the input
norm and after the norm after down), gate/up and down, with the same outputs. On CUDA in-process (the Gluon kernel on
sm_90), on the CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a script; the GEMM is quant_tc's twin
there). In-process on any machine: xp that quant_matmul would refuse as x (wrong K, dtype) or a y not [M, N] is
refused, and quant_tcl.launch_tcl refuses an xp its cp.async copies cannot read (strided, misaligned); _XpPicks keys
its memo as the tuner keys its table (quant_matmul_config._key's weight fields).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from cases import ON_SM90
from hgemv_variants import case_runner, main

CASES = ("dispatch", "dispatch-split", "forward-mixed", "forward-tcl")
GPU_CASES = ("dispatch-7b-gu", "dispatch-13b-down")


def _weight(device: str, k: int, n: int, act: bool = False, bits: int = 4, sym: bool = False, group: int = 128) -> Any:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    raw = make_gptq(k, n, bits, group, sym, act, 1)
    return prepare_gptq_weight(**{a: t.to(device) if torch.is_tensor(t) else t for a, t in raw.items()}, bits=bits,
                               group_size=group, sym=sym)  # fmt: skip


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


def _forward_runs(device: str, kinds: dict[str, Any], runs: tuple[tuple[str, str, bool], ...]) -> dict[str, Any]:
    """Two layers of the tiny int4 Llama (hidden 128, intermediate 256, 2 rows; random input, post and final norm
    weights), decode fusion "none", picks by module (`kinds`: module -> QMMConfig, for both quant_matmul's and
    llama_fast's tuner lookups). runs: (name, INLAID_TCSX_XP, M bucket 2 in TCL_XP_BUCKETS?). -> per run the hidden
    states, KV cache and llama_fast's GEMMs on an operand-ordered x ((kind, xp given) per launch_xp_kind call)."""
    import os

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import m_bucket
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 2)
    for layer in w.layers:
        layer.input_norm.copy_(torch.rand(c.hidden_size) + 0.5)
    w.norm.copy_(torch.rand(c.hidden_size) + 0.5)
    names = {id(getattr(layer, m).parts[0]): m for layer in w.layers for m in kinds}
    saved = (quant_matmul.tuned_config, llama_fast.launch_xp_kind, llama_fast.TCL_XP_BUCKETS,
             os.environ.get("INLAID_TCSX_XP"))  # fmt: skip
    calls: list[tuple[str, bool]] = []

    def spy(wp: Any, cfg: Any, y: Any, xp: Any) -> None:
        calls.append((cfg.kind, xp is not None))
        saved[1](wp, cfg, y, xp)

    quant_matmul.tuned_config = llama_fast.tuned_config = lambda x2, wp: kinds[names[id(wp)]]  # type: ignore[assignment]
    llama_fast.launch_xp_kind = spy  # type: ignore[assignment]
    out: dict[str, Any] = {}
    try:
        for run, env, listed in runs:
            os.environ["INLAID_TCSX_XP"] = env
            llama_fast.TCL_XP_BUCKETS = frozenset({m_bucket(2)}) if listed else frozenset()  # type: ignore[misc]
            calls.clear()
            kv = d["kv"].clone()
            hidden = forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], kv,
                                  DecodeLayout(d["tables"], d["lens"], 1, "none"), None)  # fmt: skip
            out[run] = (hidden, kv, list(calls))
    finally:
        quant_matmul.tuned_config = llama_fast.tuned_config = saved[0]  # type: ignore[assignment]
        llama_fast.launch_xp_kind = saved[1]  # type: ignore[assignment]
        llama_fast.TCL_XP_BUCKETS = saved[2]  # type: ignore[misc]
        if saved[3] is None:
            os.environ.pop("INLAID_TCSX_XP", None)
        else:
            os.environ["INLAID_TCSX_XP"] = saved[3]
    base, rest = out[runs[0][0]], [r[0] for r in runs[1:]]
    return dict(equal=[torch.equal(base[0], out[r][0]) for r in rest], kv_equal=[torch.equal(base[1], out[r][1]) for r in rest],
                rel=[float((base[0] - out[r][0]).abs().max() / base[0].abs().max().clamp_min(1e-6)) for r in rest],
                calls={r: v[2] for r, v in out.items()}, finite=bool(torch.isfinite(out[runs[-1][0]][0]).all()),
                rows=int(base[0].shape[0]))  # fmt: skip


def _forward_mixed(device: str) -> dict[str, Any]:
    """Picks qkv tcsx, o and gate/up tcl, down "tc". Runs: "off" (INLAID_TCSX_XP=0), "tcsx" (on, no tcl bucket), "tcl"
    (on, bucket 2 listed)."""
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    kinds = {"qkv": QMMConfig(32, 64, 128, 1, 4, 4, False, "tcsx"), "o": QMMConfig(64, 64, 128, 1, 4, 2, True, "tcl"),
             "gate_up": QMMConfig(64, 64, 128, 1, 4, 2, True, "tcl"), "down": QMMConfig(32, 64, 128, 1, 4, 1, True, "tc")}  # fmt: skip
    return _forward_runs(device, kinds, (("off", "0", False), ("tcsx", "1", False), ("tcl", "1", True)))


def _forward_tcl(device: str) -> dict[str, Any]:
    """tcl kinds everywhere, as the H200 table's tcl consumers: qkv tcl (7B M256), gate/up tclp split 2, down tcls split 2
    (13B down: split-K), o tcl (its x is the attention's: never xp). Runs: "off" (INLAID_TCSX_XP=0, bucket 2 listed),
    "unlisted" (on, bucket 2 not listed: every tcl GEMM runs its pre-pass), "on" (on, listed)."""
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    kinds = {"qkv": QMMConfig(128, 64, 128, 1, 4, 2, True, "tcl"), "o": QMMConfig(64, 64, 128, 1, 4, 2, True, "tcl"),
             "gate_up": QMMConfig(64, 64, 128, 2, 4, 3, True, "tclp"),
             "down": QMMConfig(128, 64, 128, 2, 4, 3, True, "tcls")}  # fmt: skip
    return _forward_runs(device, kinds, (("off", "0", True), ("unlisted", "1", False), ("on", "1", True)))


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
    if case_id == "forward-tcl":
        return _forward_tcl(device)
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


def test_decode_step_with_tcl_picks_takes_xp_at_qkv_gate_up_and_down(xp_case: Any) -> None:
    if torch.cuda.is_available() and not ON_SM90:
        pytest.skip("tcl is sm_90 only")
    res = xp_case("forward-tcl")
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["rows"] == 2, res
    if torch.cuda.is_available():  # gate/up and down split K: their fp32 atomics add in a varying order on the GPU
        assert max(res["rel"]) < 1e-2, res
    else:
        assert res["equal"] == [True, True] and res["kv_equal"] == [True, True], res
    calls = res["calls"]
    # per layer: qkv (layer 0's x from the input norm, layer 1's from the norm after layer 0's down), gate/up (the
    # post-attention norm), down (silu_mul), split-K included; o (tcl on the attention's output) keeps its pre-pass
    assert calls["off"] == [] and calls["unlisted"] == [], calls
    assert [list(c) for c in calls["on"]] == [["tcl", True], ["tclp", True], ["tcls", True]] * 2, calls


def _refused(call: Any, pattern: str) -> bool:
    """Did call() raise a ValueError whose message matches pattern? (anything else propagates)"""
    import re

    try:
        call()
    except ValueError as exc:
        return re.search(pattern, str(exc)) is not None
    return False


@pytest.mark.parametrize("kind", ["tcl", "tcls", "tcsx", "tcsx2"])
def test_gemm_on_xp_refuses_what_quant_matmul_refuses_as_x(kind: str) -> None:
    from inlaid_worker.kernels.quant_matmul import check_xp, launch_tcl_kind, launch_tcsx_kind, launch_xp_kind
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    w = _weight("cpu", 256, 128)  # K = 256, N = 128
    cfg = QMMConfig(64, 64, 128, 1, 4, 2, True, kind)
    direct = launch_tcl_kind if kind.startswith("tcl") else launch_tcsx_kind
    good, y = torch.zeros(4, 256, dtype=torch.float16), torch.empty(4, 128, dtype=torch.float16)
    check_xp(good, w, y, "t")  # a well-formed xp passes, fp16 or bf16
    check_xp(good.bfloat16(), w, y.bfloat16(), "t")
    bad = {"K": (torch.randn(4, 512).half(), y),  # the reviewer's repro: a wider x was read as K = 256
           "dtype": (torch.zeros(4, 256), y), "1-D": (torch.zeros(256, dtype=torch.float16), y[:1]),
           "y rows": (good, torch.empty(3, 128, dtype=torch.float16)),
           "y cols": (good, torch.empty(4, 64, dtype=torch.float16)),
           "y 1-D": (good, torch.empty(512, dtype=torch.float16))}  # fmt: skip
    pattern = r"^launch_tc\w+_kind: (xp|y) must be"
    missed = [name for name, (xp, yy) in bad.items()
              if not _refused(lambda: launch_xp_kind(w, cfg, yy, xp), pattern)
              or not _refused(lambda: direct(None, w, cfg, yy, xp=xp), pattern)]  # fmt: skip
    assert missed == [], f"{kind}: accepted {missed}"
    assert _refused(lambda: direct(None, w, cfg, y), "x2 or xp is needed")
    assert _refused(lambda: launch_xp_kind(w, QMMConfig(64, 64, 128, 1, 4, 2, True, "tc"), y, good),
                    "takes no operand-ordered x")  # fmt: skip


def test_a_tcl_call_with_operand_ordered_x_is_refused_off_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama_fast's xp path reaches launch_tcl_kind without launch_quant_matmul's sm_90 check: it checks itself, before
    anything reads xp (as test_non_hopper checks for launch_tcsx_kind)."""
    from types import SimpleNamespace

    from inlaid_worker.kernels import device_caps as caps
    from inlaid_worker.kernels.quant_matmul import launch_tcl_kind
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    caps.sm_major.cache_clear()
    xp = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 0), shape=(128, 4096))
    try:
        with pytest.raises(ValueError, match="sm_90"):
            launch_tcl_kind(None, None, QMMConfig(128, 64, 128, 1, 4, 2, True, "tcl"), None, xp=xp)  # type: ignore[arg-type]
    finally:
        caps.sm_major.cache_clear()  # the fake capability must not stay cached for later GPU tests


def test_launch_tcl_refuses_an_xp_its_copies_cannot_read() -> None:
    from inlaid_worker.kernels.quant_tcl import launch_tcl

    w = _weight("cpu", 256, 128)
    y = torch.empty(4, 128, dtype=torch.float16)
    bad = {"column slice (520-byte rows)": torch.zeros(4, 260, dtype=torch.float16)[:, :256],
           "misaligned start (8 bytes in)": torch.zeros(4 * 256 + 4, dtype=torch.float16)[4:].view(4, 256),
           "transposed": torch.zeros(256, 4, dtype=torch.float16).t()}  # fmt: skip
    missed = [name for name, xp in bad.items()
              if not _refused(lambda: launch_tcl(None, w, 64, 64, 1, 4, 2, 0, y, xp=xp), "16-byte aligned rows")]  # fmt: skip
    assert missed == [], f"launch_tcl accepted {missed}"


def test_xp_picks_look_up_again_for_a_weight_of_the_same_shape_with_other_quantization(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.quant_weights import QuantMatrix

    looked: list[tuple[int, bool]] = []

    def pick(x2: torch.Tensor, wp: Any) -> QMMConfig:  # the answer follows sym and the group size, as a table's may
        looked.append((wp.group_size, wp.sym))
        return QMMConfig(128 if wp.sym else 64, 128 if wp.group_size == 256 else 64, 128, 1, 4, 2, True, "tcl")

    monkeypatch.setattr(llama_fast, "tuned_config", pick)
    monkeypatch.setattr(llama_fast, "TCL_XP_BUCKETS", frozenset({128}))
    ws = {"g128": _weight("cpu", 256, 128), "sym": _weight("cpu", 256, 128, sym=True),
          "g256": _weight("cpu", 256, 128, group=256), "g128 again": _weight("cpu", 256, 128)}  # fmt: skip
    x = torch.zeros(100, 256, dtype=torch.float16)  # M 100: bucket 128
    picks = llama_fast._XpPicks()
    got = {name: picks(x, QuantMatrix((w,))) for name, w in ws.items()}
    assert all(g is not None and g[0] is ws[n] for n, g in got.items()), got
    assert looked == [(128, False), (128, True), (256, False)], looked  # one lookup each; "g128 again" a memo hit
    cfgs = {n: (g[1].block_m, g[1].block_n) for n, g in got.items() if g is not None}
    assert cfgs == {"g128": (64, 64), "sym": (128, 64), "g256": (64, 128), "g128 again": (64, 64)}, cfgs


def test_xp_picks_share_a_lookup_exactly_when_the_tuner_key_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """_XpPicks builds its own key (the tuner's costs 3-5 us a call): it must split and merge weights as
    quant_matmul_config._key does for one forward's x (same device, dtype, M bucket), or a layer would take another
    shape's pick."""
    from inlaid_worker.kernels.gptq_packing import to_k_major
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig, _key
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.quant_weights import QuantMatrix

    base = _weight("cpu", 256, 128)
    variants = {"base": base, "base again": _weight("cpu", 256, 128), "N": _weight("cpu", 256, 256),
                "K": _weight("cpu", 384, 128), "bits": _weight("cpu", 256, 128, bits=3),
                "group": _weight("cpu", 256, 128, group=256), "sym": _weight("cpu", 256, 128, sym=True),
                "act-order": _weight("cpu", 256, 128, act=True), "K-major": to_k_major(base)}  # fmt: skip
    real = llama_fast._xp_pick
    looked: list[str] = []
    monkeypatch.setattr(llama_fast, "tuned_config", lambda x2, wp: QMMConfig(128, 64, 128, 1, 4, 2, True, "tcsx"))
    monkeypatch.setattr(llama_fast, "_xp_pick", lambda x2, w: looked.append("") or real(x2, w))

    def x(w: Any) -> torch.Tensor:
        return torch.zeros(8, w.in_features, dtype=torch.float16)

    names = list(variants)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            wa, wb = variants[a], variants[b]
            looked.clear()
            picks = llama_fast._XpPicks()
            picks(x(wa), QuantMatrix((wa,)))
            picks(x(wb), QuantMatrix((wb,)))
            same = _key(x(wa), wa) == _key(x(wb), wb)
            assert len(looked) == (1 if same else 2), (a, b, same)
    assert _key(x(base), base) == _key(x(base), variants["base again"])  # the merge case is exercised


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
