"""The "+g" decode fusion (kernels.consumer_finish.gemv_gu_sums / gu_down_add_norm): the gate/up GEMV leaves its fp32
split-K sums in a region of their own (quant_common.gate_up_sums), the down GEMV computes its x = silu(gate) * up from
them on load (quant_hgemvr's x_sums, swiglu_epilogue's rounding), and the add + RMSNorm after down zeroes the region
(fused_norm's `clear`).

Kernel cases: the down GEMV's output, h and the norm from the sums equal those of today's "swiglu+cfin" path (the SwiGLU
epilogue's act, then the down GEMV + norm; bit-identical under the interpreter, whose atomics add in program order;
within the atomics' order on CUDA), with down deferred (cfin) or writing y, split-K or not; the region, the shared
workspace and the counters are zero afterwards, and a second call finds them zero. The forward case runs a 2-layer decode
step through forward_fast: "swiglu+cfin+g" against "swiglu+cfin", which GEMVs read the sums, the region zero afterwards,
the fallbacks (a gate/up pick that cannot defer, a down pick that is no row GEMV, LoRA) and an error in the down
GEMV's norm (the region zeroed). On CUDA in-process; on the CPU once in a subprocess under TRITON_INTERPRET=1 (this
file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, check_sums_region, main, make_case, with_gpu_cases

# (K, I, N, M, gate/up (kind, block_m, block_k, split), down (kind, block_m, block_k, split), cfin)
CASES: dict[str, tuple] = {
    "k128-i128-m1-cfin": (128, 128, 64, 1, ("hgemvr", 1, 64, 2), ("hgemvr", 1, 64, 2), True),
    # burst with 2 K tiles a program on both GEMVs (down K 256 / block_k 64 / split 2), down writing y (no cfin)
    "k128-i256-m2-hgemvrb-y": (128, 256, 64, 2, ("hgemvrb", 2, 64, 2), ("hgemvrb", 2, 64, 2), False),
    # pin (hgemvrq) with block_k 128 (RO 4) and 3 rows in a block_m 4 program (rows clamped)
    "k128-i512-m3-pin": (128, 512, 64, 3, ("hgemvr", 4, 64, 2), ("hgemvrq", 4, 128, 2), True),
    "k128-i128-m1-down-nosplit": (128, 128, 64, 1, ("hgemvr", 1, 64, 2), ("hgemvr", 1, 64, 1), True),
}
# the 7B MLP with the shipped H200 table's batch-1 picks (gate/up hgemvr split 4, down hgemvr split 22; CUDA only)
GPU_CASES: dict[str, tuple] = {
    "7b-mlp-m1": (4096, 11008, 4096, 1, ("hgemvr", 1, 128, 4), ("hgemvr", 1, 128, 22), True),
    "7b-mlp-m2-hgemvr-down": (4096, 11008, 4096, 2, ("hgemvr", 2, 128, 6), ("hgemvr", 2, 128, 22), True),
    # the down kinds a GPU without the shipped table may pick: burst (4 tiles a program), pin with block_k 64
    "7b-mlp-m1-burst-down": (4096, 11008, 4096, 1, ("hgemvr", 1, 128, 4), ("hgemvrb", 1, 128, 22), True),
    "7b-mlp-m1-pin-bk64-down": (4096, 11008, 4096, 1, ("hgemvr", 1, 128, 4), ("hgemvrq", 1, 64, 43), True),
}
ALL_CASES = {**CASES, **GPU_CASES, "forward": ()}


def _cfg(pick: tuple) -> Any:
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    kind, bm, bk, split = pick
    return QMMConfig(bm, 64, bk, split, 2, 1, False, kind)


def run_kernel_case(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels import quant_common
    from inlaid_worker.kernels.consumer_finish import gemv_add_norm, gemv_gu_sums, gu_down_add_norm
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags
    from inlaid_worker.kernels.quant_swiglu import gemv_swiglu

    k, inter, n, m, pick_gu, pick_d, cfin = ALL_CASES[case_id]
    _, w_gu, x = make_case(case_id, k, 2 * inter, m, 128, False, False, "gptq", device)
    _, w_d, _ = make_case(case_id + "-down", inter, n, m, 128, False, False, "gptq", device)
    cfg_gu, cfg_d = _cfg(pick_gu), _cfg(pick_d)
    out: dict[str, Any] = dict(diff_y=0.0, diff_h=0.0, diff_norm=0.0, dirty=0, was_set=True)
    g = (torch.rand(n, device=device) + 0.5).half()
    for rep in range(2):  # the second call on fresh inputs finds the region the first one's norm cleared
        xr = x * (rep + 1) * 0.5
        act = gemv_swiglu(xr, w_gu, cfg_gu)  # today's epilogue (the reference)
        sums = gemv_gu_sums(xr, w_gu, cfg_gu)
        if sums is None:
            return dict(error="gemv_gu_sums fell back")
        region = quant_common._GU_SUMS[xr.device]
        ws, cnt = quant_common._WORKSPACES[xr.device]
        out["shared"] = bool(region.untyped_storage().data_ptr() == ws.untyped_storage().data_ptr())
        # the down GEMV alone from the sums (y written) against the same GEMV on act
        y_s = torch.empty(m, n, dtype=torch.float16, device=device)
        y_a = torch.empty_like(y_s)
        args = (w_d, cfg_d.block_m, cfg_d.block_n, cfg_d.block_k, cfg_d.split_k, cfg_d.num_warps)
        launch_hgemvr(torch.empty(m, inter, dtype=torch.float16, device=device), *args, y_s, x_sums=sums,
                      **hgemvr_flags(cfg_d.kind))  # fmt: skip
        launch_hgemvr(act, *args, y_a, **hgemvr_flags(cfg_d.kind))
        top = float(y_a.float().abs().max())
        out["diff_y"] = max(out["diff_y"], float((y_s.float() - y_a.float()).abs().max()) / top)
        out["was_set"] = out["was_set"] and bool((sums != 0).any())  # the down GEMV left them
        h0 = torch.randn(m, n, device=device).half()
        h1, h2 = h0.clone(), h0.clone()
        normed = gu_down_add_norm(sums, w_d, h1, g, 1e-5, cfg_d, cfin=cfin)
        ref = gemv_add_norm(act, w_d, h2, g, 1e-5, cfg_d) if cfin else None
        if ref is None:  # (down cannot defer, or cfin off): the GEMV, then add_rms_norm
            y = torch.empty(m, n, dtype=torch.float16, device=device)
            launch_hgemvr(act, *args, y, **hgemvr_flags(cfg_d.kind))
            ref = add_rms_norm(y, g, 1e-5, residual=h2)
        top_h = float(h2.float().abs().max())
        out["diff_h"] = max(out["diff_h"], float((h1.float() - h2.float()).abs().max()) / top_h)
        out["diff_norm"] = max(out["diff_norm"], float((normed.float() - ref.float()).abs().max())
                               / float(ref.float().abs().max()))  # fmt: skip
        out["dirty"] += int((region != 0).sum()) + int((ws != 0).sum()) + int((cnt != 0).sum())
    return out


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a 2-layer tiny Llama (hidden 128, intermediate 256) through forward_fast with a
    split-K row GEMV forced for every GEMV (block_k 64: split in two): "swiglu+cfin+g" against "swiglu+cfin" and
    then the fallbacks and an error after the gate/up GEMV."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import fused_norm, quant_common
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 2)
    real, pick, real_norm = cf.launch_hgemvr, cf.config_for, cf.add_rms_norm_sums
    calls: list[str] = []
    picks: list[int] = []  # cf.config_for's calls (N of each)

    class Lora:  # LoRA on every module, delta 0: the unfused path with its adds
        def add(self, y: torch.Tensor, x: torch.Tensor, i: int, name: str) -> None:
            pass

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append("gu" if kw.get("sums") is not None else "down" if kw.get("x_sums") is not None else "other")
        return real(*args, **kw)

    def run(fusion: str, lora: Any = None) -> torch.Tensor:
        return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                            DecodeLayout(d["tables"], d["lens"], 1, fusion), lora).float()  # fmt: skip

    def force(down_kind: str = "hgemvr", gu_split: int = 2) -> None:
        def config_for(x2: torch.Tensor, wt: Any) -> QMMConfig:
            picks.append(wt.out_features)
            return QMMConfig(2, 64, 64, gu_split if wt.out_features == 512 else 2, 2, 1, False,
                             down_kind if wt.in_features == 256 else "hgemvr")  # fmt: skip

        cf.config_for = config_for

    cf.launch_hgemvr = spy
    out: dict[str, Any] = dict(modes=[fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE])
    try:
        force()
        base = run("swiglu+cfin")
        for name, fusion, down_kind, gu_split, lora in (
                ("g", "swiglu+cfin+g", "hgemvr", 2, None), ("g_down_tc", "swiglu+cfin+g", "tcs2a", 2, None),
                ("g_gu_nosplit", "swiglu+cfin+g", "hgemvr", 1, None), ("g_lora", "swiglu+cfin+g", "hgemvr", 2, Lora()),
        ):  # fmt: skip
            force(down_kind, gu_split)
            calls.clear()
            picks.clear()
            got = run(fusion, lora) if down_kind == "hgemvr" else None
            if got is None:  # (a tensor-core down pick cannot run here: only the pair test is checked)
                x2 = torch.zeros(2, 128, dtype=torch.float16, device=device)
                h = torch.zeros(2, 128, dtype=torch.float16, device=device)
                layer = w.layers[0]
                out[name] = dict(ok=cf.gu_pair(x2, layer.gate_up.parts[0], layer.down.parts[0], h) is not None)
                continue
            region = quant_common._GU_SUMS.get(got.device)
            out[name] = dict(err=float((got - base).norm() / base.norm()), calls=list(calls), picks=list(picks),
                             finite=bool(torch.isfinite(got).all()),
                             dirty=0 if region is None else int((region != 0).sum()))  # fmt: skip
        # the norm after down refuses after both GEMVs ran: the region (and down's workspace sums) are zeroed
        force()

        def failing_norm(*args: Any, **kw: Any) -> torch.Tensor:
            if kw.get("clear") is None:  # the norm after o
                return real_norm(*args, **kw)
            assert bool((kw["clear"] != 0).any()), "the gate/up GEMV filled the region first"
            raise ValueError("norm refused")

        cf.add_rms_norm_sums, raised = failing_norm, "nothing"
        try:
            run("swiglu+cfin+g")
        except ValueError as exc:
            raised = str(exc)
        finally:
            cf.add_rms_norm_sums = real_norm
        region = quant_common._GU_SUMS.get(base.device)
        ws, cnt = quant_common._WORKSPACES[base.device]
        out["g_raises"] = dict(raised=raised, dirty=-1 if region is None else int((region != 0).sum()),
                               ws_dirty=int((ws != 0).sum()) + int((cnt != 0).sum()))  # fmt: skip
    finally:
        cf.launch_hgemvr, cf.config_for, cf.add_rms_norm_sums = real, pick, real_norm
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    return run_forward(device) if case_id == "forward" else run_kernel_case(case_id, device)


@pytest.fixture(scope="module")
def g_case() -> Any:
    return case_runner(__file__, run_case, "gate/up sums", 600)


@pytest.mark.parametrize("case_id", with_gpu_cases(CASES, GPU_CASES))
def test_down_reads_the_gate_up_sums(case_id: str, g_case: Any) -> None:
    res = g_case(case_id)
    check_sums_region(res, "gate/up")
    # exact in the interpreter; on CUDA the atomics' order may move a sum, so act, by an fp16 ulp (relative to the
    # largest value, as test_consumer_finish_q's bounds)
    cuda = torch.cuda.is_available()
    assert res["diff_y"] <= (2e-3 if cuda else 0.0), res
    assert res["diff_h"] <= (2e-3 if cuda else 0.0) and res["diff_norm"] <= (2e-2 if cuda else 0.0), res


def test_forward_fast_gsums_match_and_fall_back(g_case: Any) -> None:
    res = g_case("forward")
    assert "error" not in res, res.get("error")
    g = res["g"]
    assert g["finite"] and g["err"] < 1e-2 and g["dirty"] == 0, res  # (the "swiglu+cfin" gate/up: its own pick)
    # per layer: gate/up into the region, down from it (deferred); o deferred ("cfin"): 2 layers
    assert g["calls"] == ["other", "gu", "down"] * 2, res
    assert g["picks"] == [128, 512, 128] * 2, res  # one tuner pick a GEMV (o, gate/up, down): gu_pair's go on to both
    assert res["g_down_tc"] == dict(ok=False), res  # a down pick that is no row GEMV: no "+g"
    for name in ("g_gu_nosplit", "g_lora"):
        fb = res[name]
        assert fb["finite"] and fb["err"] < 1e-2 and fb["dirty"] == 0 and "gu" not in fb["calls"], (name, res)
    assert res["g_raises"] == dict(raised="norm refused", dirty=0, ws_dirty=0), res


def test_names_and_bad_arguments() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.model import decode_graphs as dg
    from inlaid_worker.model import llama_fast

    g_names = [f for f in llama_fast.DECODE_FUSIONS if llama_fast.gsums_fused(f)]
    assert g_names == ["swiglu+cfin+g", "swiglu+cfin+q+g", "swiglu+cfin+q+g+dn2"]  # (+dn2: kernels.deferred_norm)
    for name in g_names:
        assert llama_fast.attention_fusion(name) == "none"
        assert llama_fast.swiglu_fused(name) and llama_fast.cfin_fused(name)
        assert dg.check_fusion(name) == name
        assert dg.with_norm(name, True) == "norm+swiglu"
    assert llama_fast.qsums_fused("swiglu+cfin+q+g")
    assert ("quant_common", "_GU_SUMS") in dg.KERNEL_BUFFERS  # a graph keeps the region it captured
    w = prepare_gptq_weight(**make_gptq(128, 64, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 128, dtype=torch.float16), torch.empty(1, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="x_sums"):  # fp32 [M, 2 K] only
        launch_hgemvr(x, w, 1, 64, 64, 2, 2, y, x_sums=torch.zeros(1, 128))
    with pytest.raises(ValueError, match="x_sums"):
        launch_hgemvr(x, w, 1, 64, 64, 2, 2, y, x_sums=torch.zeros(1, 256, dtype=torch.float16))


@pytest.mark.parametrize("mode", (1, 2))
def test_pdl_order_of_the_g_launches(monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    """Offline sm_90 PTX (kernels.pdl's rules, test_pdl_ptx_order's checker): the deferred gate/up GEMV and the down
    GEMV reading its sums load only weights before their wait (never the sums: x_ptr), and the clearing norm (both
    CLEAR_MODEs) only its weight and no store before its wait."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.consumer_finish import gemv_gu_sums, gu_down_add_norm
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from test_pdl_ptx_order import GEMV_OK, _check, _record  # type: ignore[import-not-found]

    w_gu = prepare_gptq_weight(**make_gptq(128, 256, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    w_d = prepare_gptq_weight(**make_gptq(128, 64, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x = torch.zeros(1, 128, dtype=torch.float16)
    monkeypatch.setattr(fused_norm, "CLEAR_MODE", mode)

    def step() -> None:
        sums = gemv_gu_sums(x, w_gu, _cfg(("hgemvr", 1, 64, 2)))
        assert sums is not None
        gu_down_add_norm(sums, w_d, torch.zeros(1, 64, dtype=torch.float16), torch.ones(64, dtype=torch.float16),
                         1e-5, _cfg(("hgemvr", 1, 64, 2)))  # fmt: skip

    seen = _record(monkeypatch, step)
    assert [fn.__name__ for fn, _, _ in seen] == ["_hgemvr_kernel", "_hgemvr_kernel", "_add_rms_norm_kernel"]
    assert seen[1][2]["XSUMS"] and seen[2][2]["CLR_MODE"] == mode
    assert _check(seen, {"_hgemvr_kernel": GEMV_OK - {"perm_ptr"}, "_add_rms_norm_kernel": {"w_ptr"}}) >= 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_with_gsums_match_unfused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the shipped table's picks): decode graphs (PDL) with "swiglu+cfin+g" give
    "none"'s logits and KV cache, switching back and forth with "swiglu+cfin"; at bucket 1 the gate/up GEMV
    (N = 22016) defers into the region and down reads it, and the region is zero after every step."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import quant_common

    seen: set[tuple[str, int]] = set()
    real = cf.launch_hgemvr

    def spy(*args: Any, **kw: Any) -> Any:
        if kw.get("sums") is not None or kw.get("x_sums") is not None:
            seen.add(("gu" if kw.get("sums") is not None else "down", int(args[0].shape[0])))
        return real(*args, **kw)

    monkeypatch.setattr(cf, "launch_hgemvr", spy)
    runner, _, shape = ph.random_7b_runner(tmp_path, 2)
    ph.fusions_match_unfused(runner, shape.vocab, ("none", "swiglu+cfin+g", "swiglu+cfin", "swiglu+cfin+g"), (1, 2))
    torch.cuda.synchronize()
    assert {("gu", 1), ("down", 1)} <= seen, seen  # (bucket 2: down's pick is a tensor-core kind, "+g" falls back)
    assert all(int((r != 0).sum()) == 0 for r in quant_common._GU_SUMS.values())


if __name__ == "__main__":
    main(list(CASES) + ["forward"], run_case)
