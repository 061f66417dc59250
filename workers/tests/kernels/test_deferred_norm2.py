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
swapped pair-ordered norm would show) against "swiglu+cfin+g", its launches, and its fallback where the gate/up pick
cannot defer, which runs "swiglu+cfin+g" (today's bucket-1 path) bit for bit; on CUDA the same step with the shipped
DN2_FORM "auto" at those block_n 128 picks (an unverified layout: "thread") falls back too (deferred_norm.dn2_pays).
The policy's shuffle condition in-process (llama_fast._dn_picks with the device type given, picks forced through
config_for, nothing launched): on CUDA "+dn2" only where every consumer gets "shfl" and current pair-ordered norms.
GPU only: a 2-layer 7B-shaped runner with distinct random norms per layer and per norm (random_model.random_norms, set
before the runner is built) whose o / gate/up / down keep the random model's unit gain, so the logits see every
layer's MLP: its decode graphs (PDL) at bucket 1 with the shipped AUTO policy ("+dn2", "shfl" at every consumer)
against "none" and "swiglu+cfin+g"; the same weights with each layer's input / post pair-ordered norms swapped (a
control: the check sees it); a layer's norm replaced through dataclasses.replace (its pairs made anew by the runner);
and a LoRA step at bucket 1 falling back (no gemv_dnorm2 launch; "none"'s logits). (The fp32 fallback:
test_decode_fusion's interpreted case.)
"""

from __future__ import annotations

import re
from dataclasses import replace
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
    assert got["dirty"] == 0
    if torch.cuda.is_available():  # "auto" at block_n 128 (an unverified layout: "thread") does not pay on CUDA: the
        # step runs "swiglu+cfin+g"'s launches (deferred_norm.dn2_pays), none of deferred_norm's
        assert not {"thread", "shfl", "xnorm", "defer", "norm_sums"} & set(got["calls"]), got
    else:  # layer 0: its input norm, qkv on x (no spy: linear), o deferred, gate/up dn2, down x_norm; layer 1: qkv dn2
        # too; then the final norm on the last down's sums
        f = "shfl"
        assert got["form"] == f and got["calls"] == ["norm", "defer", f, "xnorm", f, "defer", f, "xnorm", "norm_sums"]
    assert res["gu_nosplit"] == dict(same=True, dn2_calls=0), res["gu_nosplit"]


def test_dn2_launch_checks() -> None:
    """launch_hgemvr's dnorm2 argument checks (in-process: each raises before anything is launched)."""
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    k, n, m = 128, 64, 1
    _, w, _ = make_case("checks", k, n, m, 128, False, False, "gptq", "cpu")
    sums, h, g, _ = dc.inputs("checks", m, k, 1.0, "cpu")
    h_out, slot, y = torch.zeros_like(h), torch.zeros(8), torch.empty(m, n, dtype=torch.float16)
    dn2 = (sums, h, h_out, g, slot)
    ok: dict[str, Any] = dict(finish=True, defer=True, sums=torch.zeros(m * n))
    bad: dict[str, dict[str, Any]] = {
        "no_defer": dict(dnorm2=dn2),
        "finish_only": dict(dnorm2=dn2, finish=True),
        "same_h": dict(dnorm2=(sums, h, h, g, slot), **ok),
        "sums_fp16": dict(dnorm2=(sums.half(), h, h_out, g, slot), **ok),
        "weight_len": dict(dnorm2=(sums, h, h_out, g[:64], slot), **ok),
        "slot_small": dict(dnorm2=(sums, h, h_out, g, torch.zeros(0)), **ok),
        "with_x_sums": dict(dnorm2=dn2, x_sums=torch.zeros(m, 2 * k), **ok),
        "x_norm_alone": dict(x_norm=(slot, k, 1e-5), **ok),
    }
    got = {}
    for name, kw in bad.items():
        try:
            launch_hgemvr(h, w, 1, 64, 64, 2, 2, y, **kw)
            got[name] = "launched"
        except ValueError as exc:
            got[name] = "refused" if re.search("dnorm2|x_norm", str(exc)) else str(exc)
    assert got == dict.fromkeys(bad, "refused")  # (a case that is not refused, or refused for another reason, named)


def _forced_picks(monkeypatch: Any, wide: set[int]) -> None:
    """config_for (consumer_finish's and deferred_norm's, the tuner's pick: the tests' way to force one) returning the
    7B batch-1 shape of pick (hgemvr, block_m 1, block_n 64, block_k 128, split 2, 2 warps: quant_hgemvr.shfl_layout_ok)
    for every weight, block_n 128 for the weights whose id is in `wide` (still deferrable: layer_picks passes)."""
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import deferred_norm as dn

    def config_for(x2: torch.Tensor, wt: Any) -> Any:
        return dc.cfg("hgemvr", 1, 128, 2, bn=128 if id(wt) in wide else 64)

    monkeypatch.setattr(cf, "config_for", config_for)
    monkeypatch.setattr(dn, "config_for", config_for)


def test_dn2_runs_on_cuda_only_where_every_consumer_shuffles(monkeypatch: Any, tmp_path: Any) -> None:
    """llama_fast._dn_picks (what forward_fast asks before "+dn2") with the device type given: on CUDA with the shipped
    DN2_FORM "auto" it returns None (the step runs "swiglu+cfin+g") unless every consumer (each layer's gate/up, the
    qkv of layers >= 1) gets the "shfl" formation, which needs the pick's layout and the layer's current pair-ordered
    norms; the per-thread formation (+90 us a 7B step slower than the fallback) runs only off CUDA (the interpreter)
    and when DN2_FORM forces it. A 2-layer tiny int4 model (hidden / intermediate 256: two K tiles to split), one row;
    the picks forced, nothing launched."""
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.model.llama_fast import _dn_picks, _single
    from inlaid_worker.model.weights import current_pairs, with_norm_pairs

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # (dn2_form's use_asm: the CUDA build, not the interpreter)
    c, w, h = dc.tiny_int4(tmp_path)
    parts = [{m: _single(getattr(layer, m)) for m in ("qkv", "o", "gate_up", "down")} for layer in w.layers]

    def picks(wide: set[int], cuda: bool, weights: Any = w) -> list[Any] | None:
        _forced_picks(monkeypatch, wide)
        return _dn_picks(weights, c, h, cuda=cuda)

    shfl = picks(set(), True)
    assert shfl is not None and len(shfl) == 2  # every consumer shuffles: "+dn2" runs
    forms = [dn.dn2_form(p.gate_up, parts[i]["gate_up"], current_pairs(layer)[1])  # type: ignore[index]
             for i, ((p, _, _), layer) in enumerate(zip(shfl, w.layers, strict=True))]  # fmt: skip
    assert forms == ["shfl", "shfl"]
    wide_gu = {id(parts[1]["gate_up"])}  # layer 1's gate/up: a pick outside the verified layout -> "thread"
    assert picks(wide_gu, True) is None
    assert picks({id(parts[1]["qkv"])}, True) is None  # layer 1's qkv: a consumer too
    assert picks({id(parts[0]["qkv"])}, True) is not None  # layer 0's qkv reads the input norm kernel's x: no consumer
    assert picks({id(parts[1]["o"])}, True) is not None  # (o and down are no consumers either)
    assert picks(wide_gu, False) is not None  # off CUDA the per-thread formation runs (the interpreter's, same bits)
    monkeypatch.setattr(dn, "DN2_FORM", "thread")  # forced (benchmarks): runs on CUDA too
    assert picks(wide_gu, True) is not None
    monkeypatch.setattr(dn, "DN2_FORM", "auto")
    # stale pairs (a norm replaced, its old pairs kept; or written in place): "thread" at that layer -> no "+dn2"
    stale = replace(w, layers=(w.layers[0], replace(w.layers[1], post_norm=w.layers[1].post_norm.clone())))
    assert picks(set(), True, stale) is None and picks(set(), True, with_norm_pairs(stale)) is not None
    w.layers[0].post_norm.mul_(1.0)  # (the same values: only its version moves)
    assert picks(set(), True) is None and picks(set(), False) is not None
    assert picks(set(), True, with_norm_pairs(w)) is not None


def _dn2_runner(tmp_path: Any) -> tuple[Any, Any, Any]:
    """pdl_helpers.random_7b_runner's 2-layer 7B-shaped int4 runner (the shipped table's picks, PDL) with distinct
    random norms per layer and per norm (random_model.random_norms, before the runner takes the weights, so the runner
    makes their pair-ordered copies), and only qkv's scales times 1/16 (keeps q.k and the K/V values small as there):
    o / gate/up / down keep the random model's unit gain, so each layer's attention and MLP output are of the residual's
    size and the logits check sees them (with every scale / 16 a swapped pair order moved the logits by 0.3%, under
    the 1e-2 bound: an fp32 emulation of this model, 2026-12-02)."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.runner import ModelRunner

    rm = ph.engine_module("random_model")
    shape = rm.Shape(4096, 11008, 2, 32, 32, 32000)
    cfg_dir = rm.write_config(shape, tmp_path / "cfg")
    torch.manual_seed(0)
    weights = rm.random_weights(load_model_config(cfg_dir), "int4", torch.device("cuda"), torch.float16,
                                norms="random", seed=5)  # fmt: skip
    for layer in weights.layers:
        for part in layer.qkv.parts:
            part.scales.mul_(1 / 16)
    return ModelRunner(cfg_dir, "cuda", torch.float16, 256, 16, 2, "triton", weights, True), rm, shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_at_bucket_1_run_dn2_and_fall_back_with_lora(tmp_path: Any, monkeypatch: Any) -> None:
    """A 2-layer Llama-7B-shaped int4 runner with distinct norms (_dn2_runner; the shipped table's picks, PDL): bucket
    1's AUTO policy ("swiglu+cfin+q+g+dn2") gives "none"'s and "swiglu+cfin+g"'s logits and KV cache (1e-2), every
    consumer GEMV (layer 1's qkv, both gate/ups) in the "shfl" formation; with each layer's pair-ordered input / post
    norms swapped (made to look current) AUTO's logits are off (> 0.1: the check sees a wrong pair); a layer's post
    norm replaced through dataclasses.replace gets new pairs from the runner and AUTO matches "none" again; a step with
    a LoRA adapter at bucket 1 falls back (no gemv_dnorm2 launch) and matches "none" with that adapter."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.model.decode_graphs import AUTO, policy_fusion
    from inlaid_worker.model.weights import current_pairs

    assert policy_fusion(1) == "swiglu+cfin+q+g+dn2"
    forms: list[str] = []
    real = dn.launch_hgemvr

    def spy(*args: Any, **kw: Any) -> Any:
        if kw.get("dnorm2") is not None:
            forms.append(kw["dn2_form"])
        return real(*args, **kw)

    monkeypatch.setattr(dn, "launch_hgemvr", spy)
    runner, rm, shape = _dn2_runner(tmp_path)
    w = runner.weights
    assert all(current_pairs(layer) is not None for layer in w.layers)  # (the runner made them)
    assert not torch.equal(w.layers[1].input_norm, w.layers[1].post_norm)
    runs = ph.fusions_match_unfused(runner, shape.vocab, ("none", AUTO, "swiglu+cfin+g", AUTO), (1,))
    assert forms == ["shfl"] * 6, forms  # 3 consumers a step, at the AUTO graph's warm-up and capture (then replays)
    logits = {f: [x[0] for x in v] for f, v in runs[1].items()}
    none = logits["none"][0]
    assert float((logits[AUTO][0] - logits["swiglu+cfin+g"][0]).norm() / none.norm()) < 1e-2
    step = ph.engine_module("steps").make_step(1, 1, 100, [-1], shape.vocab, 256)
    kv0 = torch.randn_like(runner.kv_cache) * 0.3

    def rel_to_none(weights: Any) -> float:
        runner.weights = weights  # (a new object: the graphs recapture)
        got = ph.decode_fusion_runs(runner, step, kv0, ("none", AUTO))
        (a, _), (b, _) = got["none"][0], got[AUTO][0]
        assert torch.isfinite(b).all()
        return float((b - a).norm() / a.norm())

    swapped = replace(w, layers=tuple(replace(layer, norm_pairs=layer.norm_pairs._replace(  # type: ignore[union-attr]
        input=layer.norm_pairs.post, post=layer.norm_pairs.input)) for layer in w.layers))  # type: ignore[union-attr]  # fmt: skip
    forms.clear()
    assert rel_to_none(swapped) > 0.1 and forms == ["shfl"] * 6, forms  # (the control: a wrong pair order shows)
    new_post = (torch.rand(shape.hidden, generator=torch.Generator().manual_seed(9)) + 0.5).half().cuda()
    moved = replace(w, layers=(w.layers[0], replace(w.layers[1], post_norm=new_post)))  # (its old pairs kept: stale)
    forms.clear()
    assert rel_to_none(moved) < 1e-2 and forms == ["shfl"] * 6, forms
    assert runner.weights.layers[1].norm_pairs.sources[1] is new_post  # type: ignore[union-attr]
    runner.weights = w
    slot = runner.add_adapter("a", rm.random_adapter(runner.config, 8, ("q_proj", "v_proj", "gate_proj", "down_proj")))
    assert slot >= 0
    forms.clear()
    step = ph.engine_module("steps").make_step(1, 1, 100, [slot], shape.vocab, 256)
    got = ph.decode_fusion_runs(runner, step, torch.randn_like(runner.kv_cache) * 0.3, ("none", AUTO))
    assert not forms, forms  # LoRA in the graph: "+dn2" fell back ("swiglu+cfin+g" with LoRA: the unfused GEMVs)
    (a, _), (b, _) = got["none"][0], got[AUTO][0]
    assert torch.isfinite(b).all() and float((b - a).norm() / a.norm()) < 1e-2
