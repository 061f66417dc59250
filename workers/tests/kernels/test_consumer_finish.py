"""The consumer finishes the split-K sum (kernels.consumer_finish; the "cfin" decode fusion): the half2 row GEMV's
finish epilogue with `defer` (partial sums only, no counter, no finish kernel), then fused_norm.add_rms_norm_sums
reading and clearing them, against the unfused launches with the same config (the GEMV with today's counter epilogue,
then add_rms_norm) and the torch references.

Each case checks the residual stream h and the normed output against the unfused pair (bit-identical under the
interpreter, whose atomics add in program order; within the atomics' order on CUDA), the error against the reference,
a second call on fresh inputs (it finds the workspace zeroed again), that the workspace and counters are all zero right
after each pair (before the unfused GEMV, which clears them itself, runs) and that the `clear` region it was given is
zeroed, under every pair of SUMS_MODE / CLEAR_MODE, with the switches restored afterwards. The forward case runs a
one-layer decode step through forward_fast with "cfin" (o and down fused) against "none", under the shipped modes; the
bad-norm case checks that a refused or failing norm leaves the workspace and the qkv sums zero. On CUDA in-process; on
the CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case, with_gpu_cases

# (K, N, M, act-order, sym, kind, block_m, split_k)
CASES: dict[str, tuple] = {
    "hgemvr-split2-m1": (256, 128, 1, False, False, "hgemvr", 1, 2),
    "hgemvrb-act-split2-m3": (256, 64, 3, True, False, "hgemvrb", 2, 2),  # two row blocks, one padded
    "hgemvrq-sym-split4-m2": (512, 64, 2, False, True, "hgemvrq", 2, 4),  # one tile per program
    # N not a power of two: the masked norm (192 of a 256 block; was 320 of 512: the same masked lanes, 3 / 5 the work)
    "hgemvr-split2-n192-m2": (256, 192, 2, False, False, "hgemvr", 1, 2),
}
# the 7B o / down shapes with the shipped H200 table's batch-1 / batch-2 picks (CUDA only)
GPU_CASES: dict[str, tuple] = {
    "7b-o-hgemvrb-m1": (4096, 4096, 1, False, False, "hgemvrb", 1, 11),
    "7b-down-hgemvr-m1": (11008, 4096, 1, False, False, "hgemvr", 1, 22),
    "7b-o-hgemvrb-m2": (4096, 4096, 2, False, False, "hgemvrb", 2, 16),
}
ALL_CASES = {**CASES, **GPU_CASES, "forward": (), "bad-norm": ()}
EPS = 1e-5
SUMS_MODES = (1, 2)  # fused_norm.SUMS_MODE: the sums exchanged, or loaded and zeroed after a barrier
REPS = 2 * len(SUMS_MODES)  # CLEAR_MODE 1, 2 alternate: every pair of the two switches once
SHIPPED_MODES = (2, 2)  # fused_norm's (SUMS_MODE, CLEAR_MODE) defaults


def modes() -> tuple[int, int]:
    from inlaid_worker.kernels import fused_norm

    return fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a one-layer tiny Llama through forward_fast: "cfin" with a split-K row GEMV forced
    for o and down (block_k 64: both split in two) against "none"; then "cfin" with a pick that cannot defer (split 1:
    every GEMV falls back)."""

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 1)
    real, pick = cf.launch_hgemvr, cf.config_for
    calls: list[int] = []

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args[1].in_features)
        return real(*args, **kw)

    def run(fusion: str) -> torch.Tensor:
        return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                            DecodeLayout(d["tables"], d["lens"], 1, fusion), None).float()  # fmt: skip

    cf.launch_hgemvr = spy
    out: dict[str, Any] = dict(modes=list(modes()))  # (the kernel cases ran before: they must restore the switches)
    try:
        base = run("none")
        for name, split in (("cfin", 2), ("fallback", 1)):
            cf.config_for = lambda x2, w, split=split: QMMConfig(2, 64, 64, split, 2, 1, False, "hgemvr")
            calls.clear()
            got = run("cfin")
            out[name] = dict(err=float((got - base).norm() / base.norm()), calls=list(calls),
                             finite=bool(torch.isfinite(got).all()))  # fmt: skip
    finally:
        cf.launch_hgemvr, cf.config_for = real, pick
    return out


def dirty_sums(device: torch.device) -> int:
    """Nonzero values in the split-K workspace, its counters and the qkv sums region of `device` (after a sync)."""
    from inlaid_worker.kernels import quant_common

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ws, cnt = quant_common._WORKSPACES.get(device, (torch.zeros(1), torch.zeros(1)))
    region = quant_common._QKV_SUMS.get(device, torch.zeros(1))
    return int((ws != 0).sum()) + int((cnt != 0).sum()) + int((region != 0).sum())


def run_bad_norm(device: str) -> dict[str, Any]:
    """gemv_add_norm refused or failing with the qkv sums to clear (filled by gemv_sums, as in a "+q" step): a wrong
    norm weight and an invalid SUMS_MODE raise ValueError before any launch (h untouched); an error after the GEMV
    launch (the norm itself raising) still leaves the workspace and the region zero."""
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    _, w, x = make_case("bad-norm", 256, 128, 1, 128, False, False, "gptq", device)
    cfg = QMMConfig(1, 64, 128, 2, 2, 1, False, "hgemvr")
    g = torch.ones(128, dtype=torch.float16, device=device)
    out: dict[str, Any] = {}
    real_norm, prev = cf.add_rms_norm_sums, fused_norm.SUMS_MODE

    def failing_norm(*args: Any, **kw: Any) -> torch.Tensor:
        raise RuntimeError("norm failed")

    for name, weight, mode in (("weight", g[:127], prev), ("weight_fp32_2d", g.float()[None], prev), ("mode", g, 0),
                               ("after_launch", g, prev)):  # fmt: skip
        q = cf.gemv_sums(x, w, cfg)
        assert q is not None
        filled = int((q != 0).sum())
        h0 = torch.randn(1, 128, device=device).half()
        h = h0.clone()
        fused_norm.SUMS_MODE = mode
        if name == "after_launch":
            cf.add_rms_norm_sums = failing_norm
        try:
            cf.gemv_add_norm(x, w, h, weight, EPS, cfg, clear=q)
            raised = "nothing"
        except (ValueError, RuntimeError) as exc:
            raised = type(exc).__name__
        finally:
            fused_norm.SUMS_MODE, cf.add_rms_norm_sums = prev, real_norm
        out[name] = dict(raised=raised, filled=filled, dirty=dirty_sums(x.device), h_same=bool(torch.equal(h, h0)))
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "forward":
        return run_forward(device)
    if case_id == "bad-norm":
        return run_bad_norm(device)
    from cases import _rel_err  # type: ignore[import-not-found]
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.consumer_finish import gemv_add_norm
    from inlaid_worker.kernels.fused_norm import add_rms_norm, add_rms_norm_reference
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n, m, act, sym, kind, bm, split = ALL_CASES[case_id]
    raw, w, x = make_case(case_id, k, n, m, 128, sym, act, "gptq", device)
    cfg = QMMConfig(bm, 64, 128, split, 2, 1, False, kind)
    g = (torch.rand(n, device=device) + 0.5).half()
    out: dict[str, Any] = dict(diff_h=0.0, diff_out=0.0, dirty_after=0, cleared=True)
    prev = modes()
    for rep in range(REPS):  # each mode twice: the second call on fresh inputs finds the workspace the first cleared
        h0 = (torch.randn(m, n, device=device) * 3).half()
        h = h0.clone()
        clear = torch.rand(m, n + 40, device=device) + 1.0  # another GEMV's sums for the norm to zero (the "+q" use)
        fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE = SUMS_MODES[rep // 2], 1 + rep % 2
        try:
            got = gemv_add_norm(x * (rep + 1), w, h, g, EPS, cfg, clear=clear)
        finally:
            fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE = prev
        if got is None:
            return dict(error="gemv_add_norm fell back")
        # right after the pair (before the unfused GEMV below, which would clear [0, M * N) itself)
        out["dirty_after"] += dirty_sums(x.device)
        out["cleared"] = out["cleared"] and not bool((clear != 0).any())
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(x * (rep + 1), w, cfg, y)
        h_u = h0.clone()
        out_u = add_rms_norm(y, g, EPS, residual=h_u)
        top_h = max(float(h_u.float().abs().max()), float(y.float().abs().max()))  # y may exceed h (h0 + y cancels)
        out["diff_h"] = max(out["diff_h"], float((h.float() - h_u.float()).abs().max()) / top_h)
        out["diff_out"] = max(out["diff_out"], float((got.float() - out_u.float()).abs().max())
                              / float(out_u.float().abs().max()))  # fmt: skip
        y_ref = quant_matmul_reference(x * (rep + 1), raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4,
                                       w.zero_offset)  # fmt: skip
        h_ref = h0.clone()
        ref = add_rms_norm_reference(y_ref, g, EPS, residual=h_ref)
        out[f"err_h{rep}"], out[f"err{rep}"] = _rel_err(h, h_ref), _rel_err(got, ref)
        out["shape"] = list(got.shape)
    out["dirty"] = dirty_sums(x.device)
    out["modes"] = list(modes())
    return out


@pytest.fixture(scope="module")
def cfin_case() -> Any:
    return case_runner(__file__, run_case, "consumer finish", 600)


@pytest.mark.parametrize("case_id", with_gpu_cases(CASES, GPU_CASES))
def test_norm_finishes_the_split_k_sum(case_id: str, cfin_case: Any) -> None:
    k, n, m, *_ = ALL_CASES[case_id]
    res = cfin_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["shape"] == [m, n], res
    assert res["dirty_after"] == 0, "split-K workspace, counters or qkv region not zero right after the pair"
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"
    assert res["cleared"], "the norm did not zero `clear`"
    assert res["modes"] == list(SHIPPED_MODES), res  # the switches restored after each call
    for rep in range(REPS):
        assert res[f"err_h{rep}"] < 2e-3 and res[f"err{rep}"] < 5e-3, res
    # the same partial sums, finished by the norm instead of the GEMV's last program: exact in the interpreter; on
    # CUDA the atomics' order may move y by an fp16 ulp (<= 2^-10 of the largest |y| or |h|: seen 0.0625, one ulp in
    # [64, 128), at the 7B down shape), the output by a few ulps of its largest value (diffs relative to those)
    cuda = torch.cuda.is_available()
    assert res["diff_h"] <= (4e-3 if cuda else 0.0) and res["diff_out"] <= (8e-3 if cuda else 0.0), res


def test_forward_fast_cfin_matches_none_and_falls_back(cfin_case: Any) -> None:
    res = cfin_case("forward")
    assert "error" not in res, res.get("error")
    assert res["modes"] == list(SHIPPED_MODES), res  # the forward runs the shipped modes, not a kernel case's leftover
    fused, fallback = res["cfin"], res["fallback"]
    assert fused["finite"] and fused["err"] < 1e-2, res
    assert fused["calls"] == [128, 256], res  # o (K = hidden) then down (K = intermediate), both deferred
    assert fallback["finite"] and fallback["err"] < 1e-2 and fallback["calls"] == [], res


def test_fallback_picks_and_lora(monkeypatch: pytest.MonkeyPatch) -> None:
    """No launch where the pick cannot leave its sums (another kind, the "f" kinds, no split, bf16, no rows) or LoRA
    targets the module (llama_fast._add_norm then runs the GEMV, the delta and add_rms_norm)."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.quant_weights import QuantMatrix

    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, h, g = torch.zeros(1, 256, dtype=torch.float16), torch.zeros(1, 128, dtype=torch.float16), torch.ones(128)

    def launch(*args: Any, **kw: Any) -> None:
        raise AssertionError("no GEMV launch expected")

    monkeypatch.setattr(cf, "launch_hgemvr", launch)
    for kind, split in (("hgemvrf", 2), ("hgemv", 2), ("tc2", 2), ("hgemvr", 1)):
        assert cf.gemv_add_norm(x, w, h, g, 1e-5, QMMConfig(1, 64, 128, split, 2, 1, False, kind)) is None, kind
    ok = QMMConfig(1, 64, 128, 2, 2, 1, False, "hgemvr")
    assert cf.gemv_add_norm_ok(x, w, h, ok)
    assert not cf.gemv_add_norm_ok(x.bfloat16(), w, h.bfloat16(), ok)
    assert not cf.gemv_add_norm_ok(x[:0], w, h[:0], ok)
    assert not cf.gemv_add_norm_ok(x, w, torch.zeros(2, 128, dtype=torch.float16), ok)

    class Lora:
        def __init__(self) -> None:
            self.names: list[str] = []

        def add(self, y: torch.Tensor, x: torch.Tensor, i: int, name: str) -> None:
            self.names.append(name)

    seen: list[str] = []
    monkeypatch.setattr(cf, "config_for", lambda x2, w: ok)
    monkeypatch.setattr(llama_fast, "gemv_add_norm", lambda *a, **k: seen.append("cfin"))
    monkeypatch.setattr(llama_fast, "linear", lambda x, weight: torch.zeros(1, 128, dtype=torch.float16))
    monkeypatch.setattr(llama_fast, "add_rms_norm", lambda y, nw, eps, residual, clear=None: y)
    lora = Lora()
    llama_fast._add_norm(x, QuantMatrix((w,)), h, g.half(), 1e-5, lora, 0, "o_proj", True)  # type: ignore[arg-type]
    assert lora.names == ["o_proj"] and seen == []
    llama_fast._add_norm(x, QuantMatrix((w,)), h, g.half(), 1e-5, None, 0, "o_proj", True)
    assert seen == ["cfin"]  # (the stand-in returned None: the unfused pair ran after it)
    assert llama_fast.cfin_fused("swiglu+cfin") and not llama_fast.cfin_fused("swiglu")
    assert llama_fast.attention_fusion("cfin") == "none" and llama_fast.attention_fusion("swiglu+cfin") == "none"


def test_bad_norm_arguments_leave_the_sums_zero(cfin_case: Any) -> None:
    """A norm refused (ValueError: wrong weight, invalid SUMS_MODE) launches nothing; one failing after the GEMV ran
    re-raises; either way the split-K workspace and the qkv sums the norm was to clear are all zero afterwards."""
    res = cfin_case("bad-norm")
    assert "error" not in res, res.get("error")
    for name, raised in (("weight", "ValueError"), ("weight_fp32_2d", "ValueError"), ("mode", "ValueError"),
                         ("after_launch", "RuntimeError")):  # fmt: skip
        r = res[name]
        assert r["filled"] > 0 and r["raised"] == raised and r["dirty"] == 0, (name, res)
        assert r["h_same"] or name == "after_launch", (name, res)  # (refused: not even h touched)


def test_norm_checked_before_the_gemv(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, no kernel runs: every refusal of the norm (weight shape, dtype, layout; residual; `clear`; an
    invalid SUMS_MODE or CLEAR_MODE) comes before the GEMV launch."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, h = torch.zeros(1, 256, dtype=torch.float16), torch.zeros(1, 128, dtype=torch.float16)
    g, ok = torch.ones(128, dtype=torch.float16), QMMConfig(1, 64, 128, 2, 2, 1, False, "hgemvr")

    def launch(*args: Any, **kw: Any) -> None:
        raise AssertionError("the GEMV launched before the norm's arguments were checked")

    monkeypatch.setattr(cf, "launch_hgemvr", launch)
    bad: list[tuple[torch.Tensor, torch.Tensor | None]] = [
        (g[:127], None), (torch.ones(128, 2, dtype=torch.float16)[:, 0], None),  # shape; a strided vector
        (torch.ones(128, dtype=torch.int32), None), (g, torch.ones(1, 64, dtype=torch.float16)),  # dtype; clear's
        (g, torch.ones(2, 64)), (g, torch.ones(64, 2).t()[:1]),  # clear's rows; a clear that is not row-major
    ]  # fmt: skip
    for weight, clr in bad:
        with pytest.raises(ValueError):
            cf.gemv_add_norm(x, w, h, weight, 1e-5, ok, clear=clr)
    for name, value in (("SUMS_MODE", 0), ("SUMS_MODE", 3), ("CLEAR_MODE", 0)):
        clear = torch.ones(1, 64)
        with monkeypatch.context() as mp:
            mp.setattr(fused_norm, name, value)
            with pytest.raises(ValueError, match=name):
                cf.gemv_add_norm(x, w, h, g, 1e-5, ok, clear=clear)
        assert not bool(clear.any()), name  # the sums it was to clear are zeroed on the way out
    with pytest.raises(ValueError, match="CLEAR_MODE"), monkeypatch.context() as mp:  # the unfused norm too
        mp.setattr(fused_norm, "CLEAR_MODE", 0)
        fused_norm.add_rms_norm(h, g, 1e-5, clear=torch.ones(1, 64))


def test_the_norm_is_checked_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, no kernel runs: gemv_add_norm and gu_down_add_norm check the norm's arguments once (before the
    GEMV; add_rms_norm_sums(checked=True) then checks only the workspace), and a workspace too small is still refused
    after the GEMV (its sums zeroed on the way out); add_rms_norm_sums called alone checks everything itself."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    down = prepare_gptq_weight(**make_gptq(64, 128, 4, 64, False, False, 1), bits=4, group_size=64, sym=False)
    x, h = torch.zeros(1, 256, dtype=torch.float16), torch.zeros(1, 128, dtype=torch.float16)
    g, ok = torch.ones(128, dtype=torch.float16), QMMConfig(1, 64, 64, 2, 2, 1, False, "hgemvr")
    calls: list[int] = []
    real = fused_norm.check_sums_norm

    def counted(*args: Any) -> None:
        calls.append(1)
        real(*args)

    class NoKernel:
        def __getitem__(self, grid: Any) -> Any:
            return lambda *a, **kw: None

    ws = [torch.ones(128 * 4)]  # the GEMV's workspace, filled
    monkeypatch.setattr(cf, "check_sums_norm", counted)
    monkeypatch.setattr(fused_norm, "check_sums_norm", counted)
    monkeypatch.setattr(fused_norm, "_add_rms_norm_kernel", NoKernel())
    monkeypatch.setattr(cf, "launch_hgemvr", lambda *a, **kw: ws[0])
    assert cf.gemv_add_norm(x, w, h, g, 1e-5, ok) is not None and len(calls) == 1
    gu = torch.zeros(1, 128)
    assert cf.gu_down_add_norm(gu, down, h, g, 1e-5, ok) is not None and len(calls) == 2
    ws[0] = torch.ones(127)  # too small for [1, 128]
    with pytest.raises(ValueError, match="sums of 127"):
        cf.gemv_add_norm(x, w, h, g, 1e-5, ok)
    assert len(calls) == 3 and not bool(ws[0].any())
    fused_norm.add_rms_norm_sums(torch.zeros(128), g, 1e-5, h)
    assert len(calls) == 4


def test_defer_needs_split_k() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 256, dtype=torch.float16), torch.empty(1, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="defer"):
        launch_hgemvr(x, w, 1, 64, 128, 1, 2, y, finish=True, defer=True)
    with pytest.raises(ValueError, match="defer"):
        launch_hgemvr(x, w, 1, 64, 128, 2, 2, y, defer=True)


@pytest.mark.parametrize("mode", SUMS_MODES)
def test_pdl_order_of_the_deferred_gemv_and_the_sums_norm(monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    """Offline sm_90 PTX (kernels.pdl's rules, test_pdl_ptx_order's checker): the deferred GEMV loads only weights
    before its wait; the norm reads nothing but its weight before the wait, so it takes the sums only after the GEMV
    has completed. Mode 1 reads the sums only by atomic exchanges (no plain load that a zero store could race); mode 2
    zeroes them only after a CTA barrier that follows every load."""
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.consumer_finish import gemv_add_norm
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from test_pdl_ptx_order import GEMV_OK, _check, _ptx, _record, weight  # type: ignore[import-not-found]

    w = weight(256, 128, 4)
    x, h = torch.zeros(1, 256, dtype=torch.float16), torch.zeros(1, 128, dtype=torch.float16)
    cfg = QMMConfig(1, 64, 128, 2, 2, 1, False, "hgemvrb")
    monkeypatch.setattr(fused_norm, "SUMS_MODE", mode)
    seen = _record(monkeypatch, lambda: gemv_add_norm(x, w, h, torch.ones(128, dtype=torch.float16), 1e-5, cfg))
    assert [fn.__name__ for fn, _, _ in seen] == ["_hgemvr_kernel", "_add_rms_norm_kernel"]
    assert seen[0][2]["FINISH"] and seen[1][2]["FROM_SUMS"] == mode
    assert _check(seen, {"_hgemvr_kernel": GEMV_OK, "_add_rms_norm_kernel": {"w_ptr"}}) >= 2
    ptx, _ = _ptx(seen[1][0], seen[1][1], dict(seen[1][2]))
    lines = [ln.strip() for ln in ptx.splitlines()]
    plain = [i for i, ln in enumerate(lines) if "ld.global" in ln]
    if mode == 1:
        assert any("atom.global" in ln and ".exch." in ln for ln in lines), "the sums are not exchanged"
        assert len(plain) == 2, plain  # the norm weight's and the residual's (add_rms_norm's plain build has 3: x too)
    else:
        zero = next(i for i, ln in enumerate(lines) if "st.global.b32" in ln or "st.global.v" in ln)
        bar = next(i for i, ln in enumerate(lines) if ln.startswith("bar.sync"))
        assert max(i for i in plain if i < zero) < bar < zero, (plain, bar, zero)
        assert not any("atom.global" in ln for ln in lines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_with_cfin_match_unfused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the shipped table's 7B picks: o and down split-K row GEMVs at bucket 1, o
    a row GEMV and down a tcs kind at bucket 2, down a tcs kind at 4, deferred with TCS_DEFER on): decode graphs with
    "cfin" / "swiglu+cfin" give "none"'s logits and KV cache, switching back and forth, deferring exactly those GEMVs
    (under the shipped SUMS_MODE / CLEAR_MODE) and leaving the workspace zero; AUTO
    captures bucket 1's "swiglu+cfin+q+g+dn2" (the policy since session 21) and bucket 2's "swiglu+cfin+q" anew."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import quant_common
    from inlaid_worker.model.decode_graphs import AUTO, policy_fusion

    assert modes() == SHIPPED_MODES  # the graphs capture the shipped read / clear modes (no earlier test's leftover)
    assert policy_fusion(1) == "swiglu+cfin+q+g+dn2" and policy_fusion(2) == "swiglu+cfin+q"
    deferred: set[tuple[int, int, str]] = set()
    real = cf._launch_deferred

    def spy(x2: Any, w: Any, cfg: Any, h: Any) -> Any:
        deferred.add((int(x2.shape[0]), int(w.in_features), cfg.kind))
        return real(x2, w, cfg, h)

    monkeypatch.setattr(cf, "_launch_deferred", spy)
    runner, _, shape = ph.random_7b_runner(tmp_path, 4)
    ph.fusions_match_unfused(runner, shape.vocab, ("none", "swiglu+cfin", "cfin", "none", "swiglu+cfin"))
    assert {(m, k) for m, k, _ in deferred} == {(1, 4096), (1, 11008), (2, 4096), (2, 11008), (4, 11008)}, deferred
    assert all((kind in cf.ROW_KINDS) == (m == 1 or k == 4096) for m, k, kind in deferred), deferred
    assert all(kind in cf.TCS_DEFER_KINDS for m, k, kind in deferred if m > 1 and k == 11008), deferred
    assert all(int((t != 0).sum()) == 0 for pair in quant_common._WORKSPACES.values() for t in pair), "dirty workspace"
    assert runner.graph_captures == 9  # 3 buckets x 3 fusions, kept across switches
    runner.decode_fusion = AUTO
    for b in (1, 2):
        runner.execute(ph.engine_module("steps").make_step(b, 1, 100, [-1] * b, shape.vocab, 256))
    assert runner.graph_captures == 11  # AUTO: bucket 1's "+dn2" and bucket 2's "swiglu+cfin+q" graphs new


if __name__ == "__main__":
    main(list(ALL_CASES)[: len(CASES)] + ["forward", "bad-norm"], run_case)
