"""Residual add + RMSNorm folded into the half2 row GEMVs (kernels.gemv_norm, norm_epilogue; the "norm" decode
fusion) vs the torch references and vs the unfused launches with the same config (the GEMV, then add_rms_norm; or
add_rms_norm, then the GEMV).

Producer: h after the in-place add and the sum-of-squares slot; consumer: the GEMV of the normalised h (plain or
with the SwiGLU epilogue). Both must leave the split-K workspace and counters at zero. On CUDA in-process; on the
CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case, with_gpu_cases

# (role, K, N, M, act-order, kind, block_m, split_k); role "prod" (residual epilogue), "cons" (normalised x),
# "cons16" (normalised x with r in fp16: NORM_FAST), "swiglu" (normalised x, SwiGLU epilogue: N = 2 I)
CASES: dict[str, tuple] = {
    "p-hgemvr-split2-m1": ("prod", 256, 128, 1, False, "hgemvr", 1, 2),
    "p-hgemvrb-split2-m3": ("prod", 128, 64, 3, False, "hgemvrb", 2, 1),  # two row blocks, one padded
    "c-hgemvrb-act-split2-m2": ("cons", 256, 64, 2, True, "hgemvrb", 2, 2),
    "c-hgemvrq-nosplit-m3": ("cons", 128, 64, 3, False, "hgemvrq", 2, 1),
    "c16-hgemvr-nosplit-m1": ("cons16", 128, 64, 1, False, "hgemvr", 1, 1),  # gemv_norm.NORM_FAST
}
# the 7B shapes with the shipped H200 table's batch-1 / batch-2 picks (CUDA only: too large for the interpreter)
GPU_CASES: dict[str, tuple] = {
    "p7b-o-hgemvrb-m1": ("prod", 4096, 4096, 1, False, "hgemvrb", 1, 11),
    "p7b-down-hgemvr-m1": ("prod", 11008, 4096, 1, False, "hgemvr", 1, 22),
    "p7b-down-hgemvr-m2": ("prod", 11008, 4096, 2, False, "hgemvr", 2, 15),
    "c7b-qkv-hgemvr-m1": ("cons", 4096, 12288, 1, False, "hgemvr", 1, 8),
    "c7b-qkv-hgemvrb-m2": ("cons", 4096, 12288, 2, False, "hgemvrb", 2, 8),
    "c7b-gateup-hgemvr-m1": ("cons", 4096, 22016, 1, False, "hgemvr", 1, 4),
    "c16-7b-qkv-hgemvr-m1": ("cons16", 4096, 12288, 1, False, "hgemvr", 1, 8),
    "s7b-gateup-hgemvr-m2": ("swiglu", 4096, 22016, 2, False, "hgemvr", 2, 6),
    "s-hgemvr-split2-m1": ("swiglu", 256, 128, 1, False, "hgemvr", 1, 2),
}
ALL_CASES = {**CASES, **GPU_CASES, "forward": ()}
EPS = 1e-5


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a one-layer tiny Llama shape with random int4 weights and random norm weights through
    forward_fast: fusion "norm" where the pick is another kernel (every norm falls back: the unfused launches, as
    fusion "none" runs them), and "norm" with the half2 row GEMV picked for every fused pair. The fused pairs' picks
    are forced (the tuner's CPU default and its tiny-shape CUDA picks are no row GEMV; whole 128-column tiles, no
    split: fewer interpreted programs)."""
    import tempfile
    from pathlib import Path

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import gemv_norm
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    rm = ph.engine_module("random_model")
    shape = rm.Shape(128, 256, 1, 4, 2, 512)  # rm.TINY with one layer: its post-attention norm is fused
    c = load_model_config(rm.write_config(shape, Path(tempfile.mkdtemp()) / "tiny"))
    torch.manual_seed(1)
    w = rm.random_weights(c, "int4", torch.device(device), torch.float16)
    for layer in w.layers:
        layer.input_norm.copy_(torch.rand(c.hidden_size) + 0.5)  # (random_weights' norms share one tensor)
    d = ph.tiny_decode_inputs(c, device)
    real, pick = gemv_norm.launch_hgemvr, gemv_norm.config_for
    calls: list[str] = []

    def spy(*args: Any, **kw: Any) -> None:
        calls.append("res" if kw.get("residual") is not None else "norm")
        real(*args, **kw)

    gemv_norm.launch_hgemvr = spy
    out: dict[str, Any] = {}
    try:
        for name, kind in (("fallback", "hgemv"), ("norm", "hgemvr")):
            gemv_norm.config_for = lambda x2, w, kind=kind: QMMConfig(2, 128, 128, 1, 4, 1, False, kind)
            calls.clear()
            hidden = forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                                  DecodeLayout(d["tables"], d["lens"], 1, "norm"), None)  # fmt: skip
            out[name] = (hidden.float(), list(calls))
    finally:
        gemv_norm.launch_hgemvr, gemv_norm.config_for = real, pick
    base = out["fallback"][0]
    return dict(err=float((out["norm"][0] - base).norm() / base.norm()), calls=out["norm"][1],
                fallback_calls=out["fallback"][1], finite=bool(torch.isfinite(out["norm"][0]).all()))  # fmt: skip


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "forward":
        return run_forward(device)
    from cases import _rel_err  # type: ignore[import-not-found]
    from inlaid_worker.kernels import quant_common
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.gemv_norm import (
        gemv_normed,
        gemv_normed_reference,
        gemv_residual,
        gemv_residual_reference,
    )
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.kernels.silu_mul import silu_mul, silu_mul_reference

    role, k, n, m, act, kind, bm, split = ALL_CASES[case_id]
    raw, w, x = make_case(case_id, k, n, m, 128, False, act, "gptq", device)
    cfg = QMMConfig(bm, 64, 128, split, 2, 1, False, kind)
    out: dict[str, Any] = {}
    if role == "prod":
        h0 = (torch.randn(m, n, device=device) * 3).half()
        h, slot = h0.clone(), torch.full((m + 1,), 0.5, device=device)  # the slot is added to (the extra: untouched)
        gemv_residual(x, w, h, slot, cfg)
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(x, w, cfg, y)
        h_ref, slot_ref = h0.clone(), torch.full((m + 1,), 0.5, device=device)
        gemv_residual_reference(x, raw, w.zero_offset, h_ref, slot_ref)
        expect = torch.full((m + 1,), 0.5, device=device)
        expect[:m] += h.float().pow(2).sum(-1)
        out.update(err=_rel_err(h, h_ref), unfused_diff=float((h.float() - (h0 + y).float()).abs().max()),
                   slot_err=float(((slot - expect).abs() / expect).max()),
                   slot_ref_err=float(((slot - slot_ref).abs() / slot_ref).max()), shape=list(h.shape))  # fmt: skip
    else:
        h = (torch.randn(m, k, device=device) * 5).half()
        g = (torch.rand(k, device=device) + 0.5).half()
        slot = h.float().pow(2).sum(-1)
        from inlaid_worker.kernels import gemv_norm

        gemv_norm.NORM_FAST = role == "cons16"
        try:
            got = gemv_normed(h, g, slot, EPS, w, cfg, swiglu=role == "swiglu")
        finally:
            gemv_norm.NORM_FAST = False
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(add_rms_norm(h, g, EPS), w, cfg, y)
        ref = gemv_normed_reference(h, g, EPS, raw, w.zero_offset)
        if role == "swiglu":
            y, ref = silu_mul(y), silu_mul_reference(ref)
        top = float(y.float().abs().max())
        out.update(err=_rel_err(got, ref), unfused_diff=float((got.float() - y.float()).abs().max()) / top,
                   slot_err=0.0, slot_ref_err=0.0, shape=list(got.shape))  # fmt: skip
    ws, cnt = quant_common._WORKSPACES[x.device]
    out["dirty"] = int((ws != 0).sum()) + int((cnt != 0).sum())
    return out


@pytest.fixture(scope="module")
def norm_case() -> Any:
    return case_runner(__file__, run_case, "GEMV norm fusion", 600)


@pytest.mark.parametrize("case_id", with_gpu_cases(CASES, GPU_CASES))
def test_fused_norm_gemv_matches_unfused_and_reference(case_id: str, norm_case: Any) -> None:
    role, k, n, m, *_ = ALL_CASES[case_id]
    res = norm_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["shape"] == [m, n // 2 if role == "swiglu" else n if role == "cons" else n], res
    assert res["err"] < 3e-3, res
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"
    assert res["slot_err"] < 1e-5 and res["slot_ref_err"] < 1e-2, res  # the slot holds sum(h^2) of the new h
    # producer: bit-identical h where the split-K sums meet in one order (the interpreter); on CUDA an atomic order
    # may move y by an fp16 ulp. Consumer: r from the slot vs add_rms_norm's in-kernel sum may differ in its last
    # bit, which can move an x by one ulp: a few ulps of the largest output
    tol = 1e-9 if role == "prod" and not torch.cuda.is_available() else 4e-3 if role != "prod" else 0.07
    assert res["unfused_diff"] < tol, res


def test_forward_fast_norm_fusion_matches_unfused_and_falls_back(norm_case: Any) -> None:
    """forward_fast's decode step with the "norm" fusion: the layer's norm between GEMVs (o -> gate/up) fused (a
    residual epilogue and a normalising load; layer 0's input norm and the final norm stay launches), hidden states
    as the unfused step's (another kernel picked: every norm falls back, no fused launch). The 7B-shaped GPU test
    below covers a layer's input norm (down -> the next qkv) too."""
    res = norm_case("forward")
    assert "error" not in res, res.get("error")
    assert res["finite"] and res["err"] < 1e-2, res
    assert res["calls"] == ["res", "norm"], res
    assert res["fallback_calls"] == [], res


def test_pair_ok_and_argument_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import gemv_norm
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    w = prepare_gptq_weight(**make_gptq(256, 256, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, g = torch.zeros(1, 256, dtype=torch.float16), torch.ones(256, dtype=torch.float16)
    pick = {"kind": "hgemvr"}
    monkeypatch.setattr(gemv_norm, "config_for", lambda x2, w: QMMConfig(1, 64, 128, 2, 2, 1, False, pick["kind"]))
    assert gemv_norm.pair_ok(x, w, x, w, g)
    assert not gemv_norm.pair_ok(x.bfloat16(), w, x, w, g)  # bf16: unfused
    assert not gemv_norm.pair_ok(x, w, x, w, g.float())
    for kind in ("hgemvrf", "tc", "hgemv"):  # the finish-kernel kind and the other GEMVs: unfused
        pick["kind"] = kind
        assert not gemv_norm.pair_ok(x, w, x, w, g), kind
    with pytest.raises(ValueError, match="gemv_residual"):
        gemv_norm.gemv_residual(x, w, x, torch.zeros(1))
    pick["kind"] = "hgemvr"
    with pytest.raises(ValueError, match="slot"):
        gemv_norm.gemv_residual(x, w, x.clone(), torch.zeros(1, dtype=torch.float16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_with_the_norm_fusion_match_unfused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the tuner's 7B picks: row GEMVs at buckets 1-2, tensor-core at 4):
    decode graphs with "norm" / "norm+swiglu" give "none"'s logits and KV cache, replayed again and again (the slots
    are zeroed in every replay), with the fused launches taken at buckets 1 and 2 only (3 of the 4 norms between
    GEMVs of the 2 layers: post 0, input 1, post 1; the final norm stays)."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import gemv_norm

    fused: list[tuple[int, str]] = []
    real = gemv_norm.launch_hgemvr

    def spy(*args: Any, **kw: Any) -> None:
        fused.append((int(args[0].shape[0]), "res" if kw.get("residual") is not None else "norm"))
        real(*args, **kw)

    monkeypatch.setattr(gemv_norm, "launch_hgemvr", spy)
    runner, _, shape = ph.random_7b_runner(tmp_path, 4)
    runs = ph.fusions_match_unfused(runner, shape.vocab, ("none", "norm", "norm+swiglu", "norm", "none", "norm"))
    for batch, got in runs.items():
        base = got["none"][0][0]
        again = got["norm"]
        assert all(torch.equal(again[0][0], r[0]) or float((again[0][0] - r[0]).norm() / base.norm()) < 2e-3
                   for r in again[1:]), batch  # fmt: skip
    assert {m for m, _ in fused} == {1, 2}, fused  # bucket 4 (batch 3): tensor-core GEMVs, unfused
    assert sum(r == "res" for _, r in fused) == sum(r == "norm" for _, r in fused) > 0


if __name__ == "__main__":
    main([*CASES, "forward"], run_case)  # the CPU's cases (GPU_CASES run in-process on CUDA)
