"""The "+dn2" decode fusion (kernels.deferred_norm, bucket 1's policy): the consumer GEMV loads the producer's fp32
sums, the residual h and the norm weight, multiplies its weights by u = fp16(h' w), h' = fp16(h + fp16(sums)),
unscaled, and defers its sums; one extra N column of programs stores h' and the rows' sum(h'^2) into a slot; the next
kernel applies r = rsqrt(slot / K + eps) (down's x_norm; the row attention's rnorm).

Kernel cases (dn2_cases; the formation deferred_norm.dn2_form picks: "thread" under the interpreter and at the small
shapes, "shfl" at the 7B batch-1 picks on CUDA; test_dn2_shfl shows the two equal bit for bit): the consumer's
deferred sums times r against add_rms_norm + the same GEMV on x (burst with a tile past the program's last, 1-3 rows;
the look-ahead loop with 4 tiles a program: test_dn2_shfl); h' stored exactly, h untouched, the slot's sum(h'^2), the
split-K workspace and counters left zero. Numerics (deferred_norm's documented limit): a large residual whose |h' w|
stays below fp16's top (4.5e4) is as accurate as today; one past it (9e4, where today's x is finite) gives a
non-finite result; a tiny residual (4e-4: u's half2 products in fp16's subnormals) bounds that error. The gate/up pair
with down's x_norm against today's "+g" pair; the row attention reading the sums with rnorm against reading
fp16(r sums), and its argument checks; launch_hgemvr's dnorm2 / x_norm checks; a 2-layer decode step through
forward_fast: "swiglu+cfin+q+g+dn2" (interpreter: "shfl" forced, with distinct input / post-attention norms, so a
swapped pair-ordered norm would show; CUDA: "auto", "thread" at its forced configs) against "swiglu+cfin+g", its
launches, and its fallback where the gate/up pick cannot defer, which runs "swiglu+cfin+g" (today's bucket-1 path) bit
for bit. GPU only: a 2-layer 7B-shaped runner's decode graphs (PDL) at bucket 1 with the shipped AUTO policy ("+dn2",
"shfl" at every consumer) against "none" and "swiglu+cfin+g", and a LoRA step at bucket 1 falling back (no
gemv_dnorm2 launch; "none"'s logits). (The fp32 fallback: test_decode_fusion's interpreted case.)
"""

from __future__ import annotations

from typing import Any

import dn2_cases as dc
import pytest
import torch
from hgemv_variants import make_case, with_gpu_cases


def _tol() -> float:
    # fp16 y: a few ulps of the largest value (r applied to the fp32 sum instead of to x: another rounding order)
    return 4e-3 if torch.cuda.is_available() else 3e-3


@pytest.mark.parametrize("case_id", with_gpu_cases(dc.QKV_CASES, dc.GPU_QKV))
def test_consumer_sums_times_r_match_norm_then_gemv(case_id: str) -> None:
    res = dc.result(case_id)
    assert "error" not in res, res.get("error")
    assert res["form"] == ("shfl" if case_id.endswith("7b-m1") else "thread"), res  # (deferred_norm.dn2_form)
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


@pytest.mark.parametrize("case_id", with_gpu_cases(dc.GU_CASES, dc.GPU_GU))
def test_deferred_gate_up_and_down_apply_r(case_id: str) -> None:
    res = dc.result(case_id)
    assert "error" not in res, res.get("error")
    assert res["form"] == ("shfl" if case_id.endswith("7b-m1") else "thread"), res
    assert res["finite"] and res["err"] <= 1e-2, res  # (silu of r * gate: one more rounding step than the ref.)
    assert res["slot_err"] <= 1e-5, res
    assert res["h_exact"] and res["h_kept"], res
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"


def test_row_attention_applies_r_to_the_sums() -> None:
    res = dc.result("attention")
    assert "error" not in res, res.get("error")
    tol = 1e-2 if torch.cuda.is_available() else 1e-3  # (CUDA: rsqrt / division approximate: a rare fp16 ulp)
    assert res["out"] <= tol and res["k"] <= tol * 30 and res["v"] <= tol * 30, res
    assert res["bad"] == dict(no_sums="ValueError", short="ValueError"), res


def test_forward_defers_both_norms_and_falls_back() -> None:
    res = dc.result("forward")
    assert "error" not in res, res.get("error")
    got = res["dn2"]  # (a swapped input / post-attention pair-ordered norm would be off by ~20%)
    assert got["finite"] and got["err"] <= 1e-2, got
    # layer 0: its input norm, qkv on x (no spy: linear), o deferred, gate/up dn2, down x_norm; layer 1: qkv dn2 too;
    # then the final norm on the last down's sums
    f = "thread" if torch.cuda.is_available() else "shfl"  # (CUDA: "auto" at block_n 128, an unverified layout)
    assert got["form"] == f and got["calls"] == ["norm", "defer", f, "xnorm", f, "defer", f, "xnorm", "norm_sums"], got
    assert got["dirty"] == 0
    assert res["gu_nosplit"] == dict(same=True, dn2_calls=0), res["gu_nosplit"]


def test_dn2_launch_checks() -> None:
    """launch_hgemvr's dnorm2 argument checks (in-process: each raises before anything is launched)."""
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    k, n, m = 128, 64, 1
    _, w, _ = make_case("checks", k, n, m, 128, False, False, "gptq", "cpu")
    sums, h, g, _ = dc.inputs("checks", m, k, 1.0, "cpu")
    h_out, slot, y = torch.zeros_like(h), torch.zeros(8), torch.empty(m, n, dtype=torch.float16)
    dn2 = (sums, h, h_out, g, slot, 1e-5)
    ok: dict[str, Any] = dict(finish=True, defer=True, sums=torch.zeros(m * n))
    bad: dict[str, dict[str, Any]] = {
        "no_defer": dict(dnorm2=dn2),
        "finish_only": dict(dnorm2=dn2, finish=True),
        "same_h": dict(dnorm2=(sums, h, h, g, slot, 1e-5), **ok),
        "sums_fp16": dict(dnorm2=(sums.half(), h, h_out, g, slot, 1e-5), **ok),
        "weight_len": dict(dnorm2=(sums, h, h_out, g[:64], slot, 1e-5), **ok),
        "slot_small": dict(dnorm2=(sums, h, h_out, g, torch.zeros(0), 1e-5), **ok),
        "with_x_sums": dict(dnorm2=dn2, x_sums=torch.zeros(m, 2 * k), **ok),
        "x_norm_alone": dict(x_norm=(slot, k, 1e-5), **ok),
    }
    for name, kw in bad.items():
        with pytest.raises(ValueError, match="dnorm2|x_norm"):
            launch_hgemvr(h, w, 1, 64, 64, 2, 2, y, **kw)
        assert name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_at_bucket_1_run_dn2_and_fall_back_with_lora(tmp_path: Any, monkeypatch: Any) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the shipped table's picks, PDL): bucket 1's AUTO policy
    ("swiglu+cfin+q+g+dn2") gives "none"'s and "swiglu+cfin+g"'s logits and KV cache (1e-2), every consumer GEMV
    (layer 1's qkv, both gate/ups) in the "shfl" formation; a step with a LoRA adapter at bucket 1 falls back (no
    gemv_dnorm2 launch) and matches "none" with that adapter."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.model.decode_graphs import AUTO, policy_fusion

    assert policy_fusion(1) == "swiglu+cfin+q+g+dn2"
    forms: list[str] = []
    real = dn.launch_hgemvr

    def spy(*args: Any, **kw: Any) -> Any:
        if kw.get("dnorm2") is not None:
            forms.append(kw["dn2_form"])
        return real(*args, **kw)

    monkeypatch.setattr(dn, "launch_hgemvr", spy)
    runner, rm, shape = ph.random_7b_runner(tmp_path, 2)
    assert all(layer.norm_pairs is not None for layer in runner.weights.layers)  # (the runner made them)
    runs = ph.fusions_match_unfused(runner, shape.vocab, ("none", AUTO, "swiglu+cfin+g", AUTO), (1,))
    assert forms == ["shfl"] * 6, forms  # 3 consumers a step, at the AUTO graph's warm-up and capture (then replays)
    logits = {f: [x[0] for x in v] for f, v in runs[1].items()}
    assert float((logits[AUTO][0] - logits["swiglu+cfin+g"][0]).norm() / logits["none"][0].norm()) < 1e-2
    slot = runner.add_adapter("a", rm.random_adapter(runner.config, 8, ("q_proj", "v_proj", "gate_proj", "down_proj")))
    assert slot >= 0
    forms.clear()
    step = ph.engine_module("steps").make_step(1, 1, 100, [slot], shape.vocab, 256)
    got = ph.decode_fusion_runs(runner, step, torch.randn_like(runner.kv_cache) * 0.3, ("none", AUTO))
    assert not forms, forms  # LoRA in the graph: "+dn2" fell back ("swiglu+cfin+g" with LoRA: the unfused GEMVs)
    (a, _), (b, _) = got["none"][0], got[AUTO][0]
    assert torch.isfinite(b).all() and float((b - a).norm() / a.norm()) < 1e-2
