"""The "+m" decode fusion (kernels.consumer_finish.attn_o_add_norm): the row attention's busy partitions store their
partials only (decode_row.row_rope_decode's `partials`: no arrival counter, no merge, no output) and the o GEMV merges
them on load per K tile = one head (quant_hgemvr's x_parts, decode_row merge 1's formula rounded to fp16).

Kernel cases: the o GEMV's output from the partials, h and the norm equal those of today's path (the row attention with
its merge, then the o GEMV + norm; bit-identical under the interpreter; within fp32 reassociation on CUDA), with the
partition workspace NaN-filled (a partial the o GEMV reads but no partition wrote shows), GQA, contexts of 0 and of one
partition (n_busy 1), M = 2, o deferred (cfin) or writing y, burst / look-ahead / pin kinds; the KV cache writes equal,
and the split-K workspace and counters are zero afterwards. The forward case runs a 2-layer decode step (head_dim 64,
GQA) through forward_fast: "swiglu+cfin+g+m" against "swiglu+cfin+g" and "swiglu+cfin+q+m" against "swiglu+cfin+q"
(4 partitions of 4 tokens), the fallbacks (o's block_k != head_dim, LoRA) and an error in the norm after o (the qkv
sums zeroed). On CUDA in-process; on the CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a script).
Offline sm_90 PTX: the o GEMV's partial loads (and the context lengths) come after its griddepcontrol.wait.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main, make_case

# (heads, kv_heads, head_dim, context lengths (M = their count), partitions, o pick (kind, block_m, split), cfin)
CASES: dict[str, tuple] = {
    "d64-gqa-m1-p8": (2, 1, 64, (13,), 8, ("hgemvr", 1, 2), True),  # n_busy 4 of 8: 4 NaN rows never read
    "d64-m2-burst-y": (2, 2, 64, (13, 3), 4, ("hgemvrb", 2, 1), True),  # n_busy 4 and 1; no split: y + add_rms_norm
    "d64-m2-ctx0-pin": (2, 1, 64, (9, 0), 4, ("hgemvrq", 2, 2), True),  # a context of 0: zeros
    "d128-m1-lookahead": (2, 1, 128, (21,), 4, ("hgemvr", 1, 1), False),  # 2 tiles a program (look-ahead), y
    "d64-m1-one-part": (2, 1, 64, (3,), 4, ("hgemvr", 1, 2), True),  # n_busy 1: the partition's own partial
}
# the 7B shapes (CUDA only): the shipped batch-1 o pick (hgemvrb 64 x 11), its block_n 256 variant, M = 2, GQA
GPU_CASES: dict[str, tuple] = {
    "7b-m1-shipped": (32, 32, 128, (512,), 32, ("hgemvrb", 1, 11), True),
    "7b-m1-bn256": (32, 32, 128, (512,), 32, ("hgemvrb", 1, 11, 256, 4), True),
    "7b-m1-bn128-w4": (32, 32, 128, (512,), 32, ("hgemvrb", 1, 11, 128, 4), True),
    "7b-m2-hgemvr": (32, 32, 128, (512, 40), 16, ("hgemvr", 2, 11), True),
    "7b-gqa-m1-pin": (32, 8, 128, (300,), 32, ("hgemvrq", 1, 8), False),
}
BLOCK_N = 4  # the row attention's tile (tokens): several partitions at these tiny contexts (the 7B cases: 16)
ALL_CASES = {**CASES, **GPU_CASES, "forward": ()}


def _step(lens: tuple, heads: int, kv_heads: int, d: int, dev: str) -> dict[str, torch.Tensor]:
    """A decode step: qkv rows, caches (block size 4), tables, lengths, the new tokens' slots (-1 at context 0),
    cos / sin."""
    from inlaid_worker.model.rope import cos_sin

    m, bs = len(lens), 4
    per = max(8, -(-max(lens) // bs) + 1)
    k_cache = (torch.randn(m * per, bs, kv_heads, d, device=dev) * 0.5).half()
    v_cache = (torch.randn(m * per, bs, kv_heads, d, device=dev) * 0.5).half()
    tables = torch.arange(m * per, dtype=torch.int32, device=dev).reshape(m, per)
    ctx = torch.tensor(lens, dtype=torch.int32, device=dev)
    last = (ctx - 1).clamp(min=0).long()
    slots = tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs
    slots = torch.where(ctx > 0, slots, -1)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, d, 2, device=dev).float() / d)
    cos, sin = cos_sin(inv_freq, last, torch.float16)
    qkv = (torch.randn(m, (heads + 2 * kv_heads) * d, device=dev) * 0.5).half()
    return dict(qkv=qkv, k=k_cache, v=v_cache, tables=tables, lens=ctx, slots=slots, cos=cos[:, 0], sin=sin[:, 0])


def _cfg(kind: str, bm: int, bk: int, split: int, bn: int = 64, warps: int = 2) -> Any:
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    return QMMConfig(bm, bn, bk, split, warps, 1, False, kind)


def run_kernel_case(case_id: str, device: str) -> dict[str, Any]:
    from fused_cases import _nan_workspace  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import decode_fused, quant_common
    from inlaid_worker.kernels import paged_decode as pd_mod
    from inlaid_worker.kernels.decode_row import merge_reference, row_rope_decode
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags

    heads, kv_heads, d, lens, parts_n, (kind, bm, split, *bn_warps), cfin = ALL_CASES[case_id]
    m, k = len(lens), heads * d
    n = 128 if k <= 256 else k
    attn_bn = 16 if case_id in GPU_CASES else BLOCK_N
    _, w_o, _ = make_case(case_id, k, n, m, 128, False, False, "gptq", device)
    cfg = _cfg(kind, bm, d, split, *bn_warps)
    st = _step(lens, heads, kv_heads, d, device)
    rargs = (st["cos"], st["sin"], st["slots"])
    out: dict[str, Any] = dict(diff_y=0.0, diff_h=0.0, diff_norm=0.0, diff_ref=0.0, dirty=0)
    # today's path: the attention with its merge (the output), the o GEMV on it
    kc, vc = st["k"].clone(), st["v"].clone()
    att = row_rope_decode(st["qkv"], *rargs, kc, vc, st["tables"], st["lens"], d**-0.5, heads, num_parts=parts_n,
                          block_n=attn_bn).reshape(m, k)  # fmt: skip
    # "+m": partials only, into a NaN-filled workspace
    km, vm = st["k"].clone(), st["v"].clone()
    plain, pd_mod.workspace = pd_mod.workspace, _nan_workspace
    try:
        parts = row_rope_decode(st["qkv"], *rargs, km, vm, st["tables"], st["lens"], d**-0.5, heads,
                                num_parts=parts_n, block_n=attn_bn, partials=True)  # fmt: skip
    finally:
        pd_mod.workspace = plain
    out["same_kv"] = bool(torch.equal(kc, km) and torch.equal(vc, vm))
    out["ref_finite"] = bool(torch.isfinite(merge_reference(parts)).all())
    out["diff_ref"] = float((merge_reference(parts)[..., :d].reshape(m, k).float() - att.float()).abs().max())
    args = (w_o, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps)
    y_m = torch.empty(m, n, dtype=torch.float16, device=device)
    y_a = torch.empty_like(y_m)
    launch_hgemvr(cf.attn_x(parts), *args, y_m, x_parts=parts, **hgemvr_flags(kind))
    launch_hgemvr(att, *args, y_a, **hgemvr_flags(kind))
    top = float(y_a.float().abs().max())
    out["y_finite"] = bool(torch.isfinite(y_m).all())
    out["diff_y"] = float((y_m.float() - y_a.float()).abs().max()) / top
    g = (torch.rand(n, device=device) + 0.5).half()
    h0 = torch.randn(m, n, device=device).half()
    h1, h2 = h0.clone(), h0.clone()
    normed = cf.attn_o_add_norm(parts, w_o, h1, g, 1e-5, cfg, cfin=cfin)
    ref = cf.gemv_add_norm(att, w_o, h2, g, 1e-5, cfg) if cfin else None
    if ref is None:  # (o cannot defer, or cfin off): the GEMV, then add_rms_norm
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_hgemvr(att, *args, y, **hgemvr_flags(kind))
        ref = add_rms_norm(y, g, 1e-5, residual=h2)
    out["diff_h"] = float((h1.float() - h2.float()).abs().max()) / float(h2.float().abs().max())
    out["diff_norm"] = float((normed.float() - ref.float()).abs().max()) / float(ref.float().abs().max())
    ws, cnt = quant_common._WORKSPACES[h1.device]
    out["dirty"] = int((ws != 0).sum()) + int((cnt != 0).sum()) + int((decode_fused._COUNTERS[h1.device] != 0).sum())
    out["parts_ok"] = cf.parts_ok(cf.attn_x(parts), w_o, h1, heads, d, cfg)
    out["parts_ok_bk"] = cf.parts_ok(cf.attn_x(parts), w_o, h1, heads, d, _cfg(kind, bm, 128 if d == 64 else 64, 1))
    return out


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows, contexts 6 and 11) of a 2-layer tiny Llama (hidden 128, 2 heads of 64, 1 KV head,
    intermediate 256) through forward_fast with a split-K row GEMV forced for every GEMV (block_k 64 = head_dim) and
    the row attention with rotary inside (4 partitions of 4 tokens): "+m" against the name without it, the fallbacks
    and an error in the norm after o."""
    import tempfile
    from pathlib import Path

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import decode_fused, quant_common
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    rm = ph.engine_module("random_model")
    c = load_model_config(rm.write_config(rm.Shape(128, 256, 2, 2, 1, 512), Path(tempfile.mkdtemp()) / "tiny"))
    torch.manual_seed(1)
    w = rm.random_weights(c, "int4", torch.device(device), torch.float16)
    for layer in w.layers:
        layer.post_norm.copy_(torch.rand(c.hidden_size) + 0.5)
    d = ph.tiny_decode_inputs(c, device)
    real, pick, rope_for, real_norm = cf.launch_hgemvr, cf.config_for, llama_fast.row_rope_for, cf.add_rms_norm_sums
    calls: list[str] = []

    class Lora:  # LoRA on every module, delta 0: the unfused path with its adds
        def add(self, y: torch.Tensor, x: torch.Tensor, i: int, name: str) -> None:
            pass

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append("o_m" if kw.get("x_parts") is not None else "other")
        return real(*args, **kw)

    def run(fusion: str, lora: Any = None) -> torch.Tensor:
        return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                            DecodeLayout(d["tables"], d["lens"], 1, fusion), lora).float()  # fmt: skip

    def force(o_block_k: int = 64) -> None:
        cf.config_for = lambda x2, wt: QMMConfig(2, 64, o_block_k if wt.in_features == 128 and wt.out_features == 128
                                                 else 64, 2, 2, 1, False, "hgemvr")  # fmt: skip

    cf.launch_hgemvr = spy
    llama_fast.row_rope_for = lambda rows, rep, dev: {"parts": 4, "block_n": 4}  # the row attention, 4 partitions
    out: dict[str, Any] = {}
    try:
        force()
        for name, fusion, base_name, o_bk, lora in (
                ("g_m", "swiglu+cfin+g+m", "swiglu+cfin+g", 64, None),
                ("q_m", "swiglu+cfin+q+m", "swiglu+cfin+q", 64, None),
                ("m_bk", "swiglu+cfin+g+m", "swiglu+cfin+g", 128, None),
                ("m_lora", "swiglu+cfin+g+m", "swiglu+cfin+g", 64, Lora()),
        ):  # fmt: skip
            force(o_bk)
            base = run(base_name, lora) if lora is None else None  # (LoRA: only that "+m" stays off)
            calls.clear()
            got = run(fusion, lora)
            base = got if base is None else base
            region = quant_common._QKV_SUMS.get(got.device)
            out[name] = dict(err=float((got - base).abs().max()), rel=float((got - base).norm() / base.norm()),
                             calls=list(calls), finite=bool(torch.isfinite(got).all()),
                             dirty=0 if region is None else int((region != 0).sum()),
                             cnt=int((decode_fused._COUNTERS[got.device] != 0).sum()))  # fmt: skip
        # the norm after o refuses after the o GEMV ran: the qkv sums and o's workspace sums are zeroed
        force()

        def failing_norm(*args: Any, **kw: Any) -> torch.Tensor:
            if kw.get("clear") is None or not calls or calls[-1] != "o_m":  # only the norm after a "+m" o
                return real_norm(*args, **kw)
            assert bool((kw["clear"] != 0).any()), "the qkv GEMV filled the region first"
            raise ValueError("norm refused")

        cf.add_rms_norm_sums, raised = failing_norm, "nothing"
        try:
            run("swiglu+cfin+q+m")
        except ValueError as exc:
            raised = str(exc)
        finally:
            cf.add_rms_norm_sums = real_norm
        region = quant_common._QKV_SUMS.get(d["kv"].device)
        ws, cnt = quant_common._WORKSPACES[d["kv"].device]
        out["m_raises"] = dict(raised=raised, dirty=-1 if region is None else int((region != 0).sum()),
                               ws_dirty=int((ws != 0).sum()) + int((cnt != 0).sum()))  # fmt: skip
    finally:
        cf.launch_hgemvr, cf.config_for, cf.add_rms_norm_sums = real, pick, real_norm
        llama_fast.row_rope_for = rope_for
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    return run_forward(device) if case_id == "forward" else run_kernel_case(case_id, device)


@pytest.fixture(scope="module")
def m_case() -> Any:
    return case_runner(__file__, run_case, "o merges the partials", 600)


@pytest.mark.parametrize("case_id", [*CASES, *(pytest.param(c, marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="7B shapes: CUDA only")) for c in GPU_CASES)])  # fmt: skip
def test_o_gemv_merges_the_attention_partials(case_id: str, m_case: Any) -> None:
    res = m_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["same_kv"] and res["y_finite"] and res["ref_finite"], res
    assert res["parts_ok"] and not res["parts_ok_bk"], res
    assert res["dirty"] == 0, "split-K workspace or counters not left at zero"
    assert res["diff_ref"] <= 2e-3, res  # merge_reference (torch) against the kernel's merge: fp16 rounding
    # exact in the interpreter (the same merge formula and rounding); on CUDA fp32 reassociation may move an fp16 ulp
    cuda = torch.cuda.is_available()
    assert res["diff_y"] <= (2e-3 if cuda else 0.0), res
    assert res["diff_h"] <= (2e-3 if cuda else 0.0) and res["diff_norm"] <= (2e-2 if cuda else 0.0), res


def test_forward_fast_msums_match_and_fall_back(m_case: Any) -> None:
    res = m_case("forward")
    assert "error" not in res, res.get("error")
    cuda = torch.cuda.is_available()
    for name in ("g_m", "q_m"):
        r = res[name]
        assert r["finite"] and r["dirty"] == 0 and r["cnt"] == 0, (name, res)
        assert (cuda or r["err"] == 0.0) and r["rel"] < 1e-2, (name, res)  # bit-exact in the interpreter
        assert r["calls"].count("o_m") == 2, (name, res)  # o from the partials in both layers
    for name in ("m_bk", "m_lora"):  # o's block_k != head_dim, LoRA: the name without "+m" (m_bk: equal to it)
        r = res[name]
        assert r["finite"] and r["err"] == 0.0 and "o_m" not in r["calls"], (name, res)
    assert res["m_raises"] == dict(raised="norm refused", dirty=0, ws_dirty=0), res


def test_names_and_bad_arguments() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.decode_row import RowPartials
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.model import decode_graphs as dg
    from inlaid_worker.model import llama_fast

    m_names = [f for f in llama_fast.DECODE_FUSIONS if llama_fast.msums_fused(f)]
    assert m_names == ["swiglu+cfin+g+m", "swiglu+cfin+q+m"]
    for name in m_names:
        assert llama_fast.attention_fusion(name) == "none"
        assert llama_fast.swiglu_fused(name) and llama_fast.cfin_fused(name)
        assert dg.check_fusion(name) == name
        assert dg.with_norm(name, True) == "norm+swiglu"
        assert name not in {f for _, f in dg.FUSION_POLICY}  # no policy takes it (built, not yet measured)
    assert llama_fast.gsums_fused("swiglu+cfin+g+m") and llama_fast.qsums_fused("swiglu+cfin+q+m")
    w = prepare_gptq_weight(**make_gptq(128, 64, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 128, dtype=torch.float16), torch.empty(1, 64, dtype=torch.float16)
    pm = torch.zeros(4)
    p = RowPartials(pm, pm, torch.zeros(4, 64), torch.ones(1, dtype=torch.int32), 2, 16, 2, 64)
    with pytest.raises(ValueError, match="x_parts"):  # block_k must be the head_dim
        launch_hgemvr(x, w, 1, 64, 128, 1, 2, y, x_parts=p)
    with pytest.raises(ValueError, match="x_parts"):  # not with x_sums
        launch_hgemvr(x, w, 1, 64, 64, 2, 2, y, x_parts=p, x_sums=torch.zeros(1, 256))
    with pytest.raises(ValueError, match="x_parts"):  # int32 context lengths
        launch_hgemvr(x, w, 1, 64, 64, 2, 2, y, x_parts=p._replace(context_lens=torch.ones(1, dtype=torch.int64)))


@pytest.mark.parametrize("kind,bm,split", [("hgemvrb", 1, 2), ("hgemvr", 2, 1), ("hgemvrq", 1, 2)])
def test_pdl_order_of_the_m_launches(monkeypatch: pytest.MonkeyPatch, kind: str, bm: int, split: int) -> None:
    """Offline sm_90 PTX (kernels.pdl's rules, test_pdl_ptx_order's checker): the row attention storing partials
    reads only the step metadata and older K / V rows before its wait and writes nothing before it; the o GEMV merging
    them loads only weights before its wait (never the partials, their maxima / sums, or the context lengths), and the
    norm after it only its weight."""
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from pdl_ptx_order import analyze  # type: ignore[import-not-found]
    from test_pdl_ptx_order import GEMV_OK, _check, _ptx, _record  # type: ignore[import-not-found]

    heads, kv_heads, d = 2, 1, 64
    _, w_o, _ = make_case("pdl", heads * d, 128, bm, 128, False, False, "gptq", "cpu")
    st = _step((13,) * bm, heads, kv_heads, d, "cpu")

    def step() -> None:
        parts = row_rope_decode(st["qkv"], st["cos"], st["sin"], st["slots"], st["k"], st["v"], st["tables"],
                                st["lens"], d**-0.5, heads, num_parts=4, block_n=BLOCK_N, partials=True)  # fmt: skip
        cf.attn_o_add_norm(parts, w_o, torch.zeros(bm, 128, dtype=torch.float16), torch.ones(128, dtype=torch.float16),
                           1e-5, _cfg(kind, bm, d, split))  # fmt: skip

    seen = _record(monkeypatch, step)
    names = [fn.__name__ for fn, _, _ in seen]
    assert names[:2] == ["_row_kernel", "_hgemvr_kernel"], names
    assert seen[0][2]["PARTIALS"] == 1 and seen[1][2]["XPARTS"] == 4 and seen[1][2]["XPBN"] == BLOCK_N
    assert _check(seen[1:], {"_hgemvr_kernel": GEMV_OK - {"perm_ptr"}, "_add_rms_norm_kernel": {"w_ptr"},
                             "_add_rms_norm_sums_kernel": {"w_ptr"}}) >= 2  # fmt: skip
    fn, args, kwargs = seen[0]  # (a partition past the context exits unwaited: decode_row's documented exception)
    ptx, pnames = _ptx(fn, args, dict(kwargs))
    rep = analyze(ptx)
    early = {pnames[i] for _, src in rep.early_loads for i in src if i < len(pnames) and pnames[i].endswith("_ptr")}
    assert rep.waits >= 1 and not rep.early_writes and early == {"ctx_ptr", "bt_ptr", "k_ptr", "v_ptr"}, early
    assert "atom" not in ptx  # no arrival counter


if __name__ == "__main__":
    main(list(CASES) + ["forward"], run_case)
