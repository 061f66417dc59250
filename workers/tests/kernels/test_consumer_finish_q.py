"""The "+q" decode fusion (kernels.consumer_finish.gemv_sums): the qkv GEMV leaves its fp32 split-K sums in a region of
their own (quant_common.qkv_sums), the row attention with fused rotary + KV write reads q, k, v as fp16(sum)
(decode_row.row_rope_decode with `sums`), and the add + RMSNorm after the o GEMV zeroes the region (fused_norm's
`clear`).

Kernel cases: the sums rounded equal the GEMV's own y, the attention output and the KV cache written from the sums equal
those from y (bit-identical under the interpreter, whose atomics add in program order; within the atomics' order on
CUDA), the shared split-K workspace is untouched, the region is zero after the clearing norm (whose output is that of
the norm without `clear`), and a second call finds it zero. The forward case runs a 2-layer decode step through
forward_fast: "cfin+q" against "cfin" and "none", which GEMVs deferred, the region zero afterwards, and the fallbacks
(a pick that cannot defer, no row-rope attention, LoRA). On CUDA in-process; on the CPU once in a subprocess under
TRITON_INTERPRET=1 (this file as a script).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, check_sums_region, main, make_case, with_gpu_cases

# (heads, kv_heads, head_dim, M, kind, block_m, split_k): qkv is K = heads * head_dim -> (heads + 2 kv_heads) * head_dim
CASES: dict[str, tuple] = {
    "mha-hgemvr-split2-m1": (4, 4, 32, 1, "hgemvr", 1, 2),
    "gqa-hgemvrb-split2-m2": (8, 2, 32, 2, "hgemvrb", 2, 2),
}
# the 7B qkv shape with the shipped H200 table's batch-1 / batch-2 style picks (CUDA only)
GPU_CASES: dict[str, tuple] = {
    "7b-qkv-hgemvr-m1": (32, 32, 128, 1, "hgemvr", 1, 8),
    "7b-qkv-hgemvrb-m2": (32, 32, 128, 2, "hgemvrb", 2, 8),
}
ALL_CASES = {**CASES, **GPU_CASES, "forward": ()}
SHIPPED_MODES = (2, 2)  # fused_norm's (SUMS_MODE, CLEAR_MODE) defaults


def _step(m: int, heads: int, kv_heads: int, d: int, dev: str) -> dict[str, Any]:
    """Caches (blocks of 4), tables, lengths 7 and 13, the new tokens' slots, cos / sin of their positions (fp16)."""
    from inlaid_worker.model.rope import cos_sin

    bs, per = 4, 4
    k_cache = (torch.randn(m * per, bs, kv_heads, d, device=dev) * 0.5).half()
    v_cache = (torch.randn(m * per, bs, kv_heads, d, device=dev) * 0.5).half()
    tables = torch.arange(m * per, dtype=torch.int32, device=dev).reshape(m, per)
    lens = torch.tensor([7, 13][:m], dtype=torch.int32, device=dev)
    last = (lens - 1).long()
    slots = tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, d, 2, device=dev).float() / d)
    cos, sin = cos_sin(inv_freq, last, torch.float16)
    return dict(k=k_cache, v=v_cache, tables=tables, lens=lens, slots=slots, cos=cos[:, 0], sin=sin[:, 0])


def run_kernel_case(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels import fused_norm, quant_common
    from inlaid_worker.kernels.consumer_finish import gemv_sums
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    heads, kv_heads, d, m, kind, bm, split = ALL_CASES[case_id]
    k, n = heads * d, (heads + 2 * kv_heads) * d
    _, w, x = make_case(case_id, k, n, m, 128, False, False, "gptq", device)
    cfg = QMMConfig(bm, 64, 128 if k >= 1024 else 64, split, 2, 1, False, kind)  # (tiny K: two tiles of 64)
    st = _step(m, heads, kv_heads, d, device)
    out: dict[str, Any] = dict(diff_y=0.0, diff_attn=0.0, diff_kv=0.0, dirty=0, was_set=True)
    for rep in range(2):  # the second call on fresh inputs finds the region the first one's norm cleared (modes 1, 2)
        xr = x * (rep + 1)
        sums = gemv_sums(xr, w, cfg)
        if sums is None:
            return dict(error="gemv_sums fell back")
        region = quant_common._QKV_SUMS[xr.device]
        ws, cnt = quant_common._WORKSPACES[xr.device]
        out["shared"] = bool(region.untyped_storage().data_ptr() == ws.untyped_storage().data_ptr())
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(xr, w, cfg, y)
        top = float(y.float().abs().max())
        out["diff_y"] = max(out["diff_y"], float((sums.half().float() - y.float()).abs().max()) / top)
        caches = {}
        for name, qkv, flag in (("sums", sums, True), ("y", y, False)):
            kc, vc = st["k"].clone(), st["v"].clone()
            att = row_rope_decode(qkv, st["cos"], st["sin"], st["slots"], kc, vc, st["tables"], st["lens"],
                                  d**-0.5, heads, num_parts=2, sums=flag)  # fmt: skip
            caches[name] = (att.float(), kc.float(), vc.float())
        (a_s, k_s, v_s), (a_y, k_y, v_y) = caches["sums"], caches["y"]
        out["diff_attn"] = max(out["diff_attn"], float((a_s - a_y).abs().max()) / float(a_y.abs().max()))
        top_kv = max(float(k_y.abs().max()), float(v_y.abs().max()))
        out["diff_kv"] = max(out["diff_kv"], float((k_s - k_y).abs().max()) / top_kv,
                             float((v_s - v_y).abs().max()) / top_kv)  # fmt: skip
        out["was_set"] = out["was_set"] and bool((sums != 0).any())  # the attention left them (many readers)
        h0 = torch.randn(m, k, device=device).half()
        g = (torch.rand(k, device=device) + 0.5).half()
        att16 = caches["y"][0].reshape(m, k).half()
        h1, h2 = h0.clone(), h0.clone()
        prev, fused_norm.CLEAR_MODE = fused_norm.CLEAR_MODE, 1 + rep  # the row's program clears, then extra programs
        try:
            normed = add_rms_norm(att16, g, 1e-5, residual=h1, clear=sums)
        finally:
            fused_norm.CLEAR_MODE = prev
        plain = add_rms_norm(att16, g, 1e-5, residual=h2)
        out["norm_same"] = bool(torch.equal(normed, plain) and torch.equal(h1, h2))
        out["dirty"] += int((region != 0).sum()) + int((ws != 0).sum()) + int((cnt != 0).sum())
    out["modes"] = [fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE]
    return out


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a 2-layer tiny Llama through forward_fast with a split-K row GEMV forced for every
    deferrable GEMV (block_k 64: split in two): "cfin+q" against "cfin" and "none", then the fallbacks."""

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import fused_norm, quant_common
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    c, w, d = ph.tiny_int4_decode(device, 2)
    real, pick, rope_for = cf.launch_hgemvr, cf.config_for, llama_fast.row_rope_for
    calls: list[int] = []

    class Lora:  # LoRA on every module, delta 0: the unfused path with its adds
        def add(self, y: torch.Tensor, x: torch.Tensor, i: int, name: str) -> None:
            calls.append(-1)

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(args[1].out_features if kw.get("sums") is not None else -args[1].in_features)
        return real(*args, **kw)

    def run(fusion: str, lora: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        kv = d["kv"].clone()
        got = forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], kv,
                           DecodeLayout(d["tables"], d["lens"], 1, fusion), lora).float()  # fmt: skip
        return got, kv.float()

    cf.launch_hgemvr = spy
    llama_fast.row_rope_for = lambda rows, rep, dev: {}  # the row attention with rotary inside (CUDA's default)
    out: dict[str, Any] = dict(modes=[fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE])  # (after the kernel cases)
    try:
        base, kv_base = run("none")
        for name, split, fusion, lora in (("cfin", 2, "cfin", None), ("q", 2, "cfin+q", None),
                                          ("q_fallback", 1, "cfin+q", None), ("q_lora", 2, "cfin+q", Lora()),
                                          ("q_norope", 2, "cfin+q", None)):  # fmt: skip
            if name == "q_norope":
                llama_fast.row_rope_for = lambda rows, rep, dev: None
            cf.config_for = lambda x2, w, split=split: QMMConfig(2, 64, 64, split, 2, 1, False, "hgemvr")
            calls.clear()
            got, kv = run(fusion, lora)
            ref, kv_ref = (base, kv_base) if lora is None else run("none", lora)
            region = quant_common._QKV_SUMS.get(got.device)
            out[name] = dict(err=float((got - ref).norm() / ref.norm()), kv=float((kv - kv_ref).abs().max()),
                             calls=[v for v in calls if v != -1], finite=bool(torch.isfinite(got).all()),
                             dirty=0 if region is None else int((region != 0).sum()),
                             got=got)  # fmt: skip
        out["q_vs_cfin"] = float((out["q"]["got"] - out["cfin"]["got"]).abs().max())
        # the row attention fails after the qkv GEMV filled the region: forward_fast zeroes it before re-raising
        llama_fast.row_rope_for = lambda rows, rep, dev: {}
        cf.config_for = lambda x2, w: QMMConfig(2, 64, 64, 2, 2, 1, False, "hgemvr")
        real_rope, raised = llama_fast.row_rope_decode, "nothing"

        def failing_rope(qkv: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
            assert bool((qkv != 0).any()), "the qkv GEMV filled the region first"
            raise ValueError("row attention refused")

        llama_fast.row_rope_decode = failing_rope
        try:
            run("cfin+q")
        except ValueError as exc:
            raised = str(exc)
        finally:
            llama_fast.row_rope_decode = real_rope
        region = quant_common._QKV_SUMS.get(base.device)
        out["q_raises"] = dict(raised=raised, dirty=-1 if region is None else int((region != 0).sum()))
        for v in out.values():
            if isinstance(v, dict):
                v.pop("got", None)
    finally:
        cf.launch_hgemvr, cf.config_for, llama_fast.row_rope_for = real, pick, rope_for
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    return run_forward(device) if case_id == "forward" else run_kernel_case(case_id, device)


@pytest.fixture(scope="module")
def q_case() -> Any:
    return case_runner(__file__, run_case, "qkv sums", 600)


@pytest.mark.parametrize("case_id", with_gpu_cases(CASES, GPU_CASES))
def test_row_attention_reads_the_qkv_sums(case_id: str, q_case: Any) -> None:
    res = q_case(case_id)
    check_sums_region(res, "qkv")
    assert res["norm_same"], res
    assert res["modes"] == list(SHIPPED_MODES), res  # CLEAR_MODE restored after each call
    # exact in the interpreter; on CUDA the atomics' order may move a q/k/v value by an fp16 ulp (all relative to the
    # largest value), which rope moves into k (one H200 run: kv 1 ulp of 32, attention 8.3e-3 after the softmax)
    cuda = torch.cuda.is_available()
    assert res["diff_y"] <= (2e-3 if cuda else 0.0), res
    assert res["diff_attn"] <= (2e-2 if cuda else 0.0) and res["diff_kv"] <= (4e-3 if cuda else 0.0), res


def test_forward_fast_qsums_match_and_fall_back(q_case: Any) -> None:
    res = q_case("forward")
    assert "error" not in res, res.get("error")
    assert res["modes"] == list(SHIPPED_MODES), res  # the forward runs the shipped modes
    q = res["q"]
    assert q["finite"] and q["err"] < 1e-2 and q["kv"] < 1e-2, res
    assert q["calls"] == [256, -128, -256] * 2, res  # per layer: qkv into the region (N = 256), o and down deferred
    assert q["dirty"] == 0, res
    assert res["cfin"]["calls"] == [-128, -256] * 2 and res["cfin"]["err"] < 1e-2, res
    assert res["q_vs_cfin"] < 2e-2, res  # only the qkv GEMV's pick differs (the tuned one in "cfin")
    for name in ("q_fallback", "q_lora", "q_norope"):
        fb = res[name]
        assert fb["finite"] and fb["err"] < 1e-2 and fb["kv"] < 1e-2 and fb["dirty"] == 0, (name, res)
    assert res["q_fallback"]["calls"] == [] and res["q_lora"]["calls"] == [], res
    assert res["q_norope"]["calls"] == [-128, -256] * 2, res  # o and down still deferred ("cfin")
    assert res["q_raises"] == dict(raised="row attention refused", dirty=0), res  # an error leaves the region zero


def test_names_and_bad_arguments() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model import decode_graphs as dg
    from inlaid_worker.model import llama_fast

    assert llama_fast.qsums_fused("swiglu+cfin+q") and not llama_fast.qsums_fused("swiglu+cfin")
    assert llama_fast.attention_fusion("cfin+q") == "none" and llama_fast.swiglu_fused("swiglu+cfin+q")
    assert dg.with_norm("swiglu+cfin+q", True) == "norm+swiglu" and dg.with_norm("cfin+q", False) == "cfin+q"
    assert ("quant_common", "_QKV_SUMS") in dg.KERNEL_BUFFERS  # a graph keeps the region it captured
    w = prepare_gptq_weight(**make_gptq(256, 128, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 256, dtype=torch.float16), torch.empty(1, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="sums"):  # the region without defer, or too small
        launch_hgemvr(x, w, 1, 64, 128, 2, 2, y, finish=True, sums=torch.zeros(128))
    with pytest.raises(ValueError, match="sums"):
        launch_hgemvr(x, w, 1, 64, 128, 2, 2, y, finish=True, defer=True, sums=torch.zeros(64))
    for kind, split in (("hgemvrf", 2), ("tc2", 2), ("hgemvr", 1)):
        assert cf.gemv_sums(x, w, QMMConfig(1, 64, 128, split, 2, 1, False, kind)) is None, kind
    with pytest.raises(ValueError, match="clear"):
        add_rms_norm(y, torch.ones(128, dtype=torch.float16), 1e-5, clear=torch.zeros(2, 8))
    qkv, cs = torch.zeros(1, 3 * 16), torch.zeros(1, 16)
    cache = torch.zeros(2, 4, 1, 16)
    with pytest.raises(ValueError, match="sums"):  # fp32 sums read as fp32: not a "+q" call
        row_rope_decode(qkv, cs, cs, torch.zeros(1, dtype=torch.long), cache, cache.clone(),
                        torch.zeros(1, 2, dtype=torch.int32), torch.ones(1, dtype=torch.int32), 1.0, 1, sums=True)


@pytest.mark.parametrize("mode", (1, 2))
def test_pdl_order_of_the_q_launches(monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    """Offline sm_90 PTX (kernels.pdl's rules, test_pdl_ptx_order's checker): the deferred qkv GEMV loads only weights
    before its wait; the row attention from the sums reads only the step metadata and older K / V rows before it
    (never the sums), and the clearing norm (both CLEAR_MODEs) only its weight and no store before its wait."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import fused_norm
    from inlaid_worker.kernels.consumer_finish import gemv_sums
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from pdl_ptx_order import analyze  # type: ignore[import-not-found]
    from test_pdl_ptx_order import GEMV_OK, _check, _ptx, _record  # type: ignore[import-not-found]

    heads, d = 4, 32
    w = prepare_gptq_weight(**make_gptq(heads * d, 3 * heads * d, 4, 128, False, False, 1), bits=4, group_size=128,
                            sym=False)  # fmt: skip
    x = torch.zeros(1, heads * d, dtype=torch.float16)
    st = _step(1, heads, heads, d, "cpu")
    monkeypatch.setattr(fused_norm, "CLEAR_MODE", mode)

    def step() -> None:
        sums = gemv_sums(x, w, QMMConfig(1, 64, 64, 2, 2, 1, False, "hgemvrb"))
        assert sums is not None
        att = row_rope_decode(sums, st["cos"], st["sin"], st["slots"], st["k"], st["v"], st["tables"], st["lens"],
                              d**-0.5, heads, num_parts=2, sums=True)  # fmt: skip
        add_rms_norm(att.reshape(1, -1), torch.ones(heads * d, dtype=torch.float16), 1e-5,
                     residual=torch.zeros(1, heads * d, dtype=torch.float16), clear=sums)  # fmt: skip

    seen = _record(monkeypatch, step)
    assert [fn.__name__ for fn, _, _ in seen] == ["_hgemvr_kernel", "_row_kernel", "_add_rms_norm_kernel"]
    assert seen[1][2]["SUMS"] == 1 and seen[2][2]["CLR_MODE"] == mode
    assert _check([seen[0], seen[2]], {"_hgemvr_kernel": GEMV_OK, "_add_rms_norm_kernel": {"w_ptr"}}) >= 2
    fn, args, kwargs = seen[1]  # (a partition past the context exits unwaited: decode_row's documented exception)
    ptx, names = _ptx(fn, args, dict(kwargs))
    rep = analyze(ptx)
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names) and names[i].endswith("_ptr")}
    assert rep.waits >= 1 and not rep.early_writes and early == {"ctx_ptr", "bt_ptr", "k_ptr", "v_ptr"}, early


@pytest.mark.skipif(not torch.cuda.is_available(), reason="decode graphs need a GPU")
def test_decode_graphs_with_qsums_match_unfused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the shipped table's picks): decode graphs with "swiglu+cfin+q" give
    "none"'s logits and KV cache, switching back and forth with "swiglu+cfin", the qkv GEMV (N = 12288) deferred into
    the region at buckets 1-2 and the region zero after every step."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import fused_norm, quant_common

    assert (fused_norm.SUMS_MODE, fused_norm.CLEAR_MODE) == SHIPPED_MODES  # captured: the shipped modes, no leftover
    deferred: set[tuple[int, int]] = set()
    real = cf.launch_hgemvr

    def spy(*args: Any, **kw: Any) -> Any:
        if kw.get("sums") is not None:
            deferred.add((int(args[0].shape[0]), int(args[1].out_features)))
        return real(*args, **kw)

    monkeypatch.setattr(cf, "launch_hgemvr", spy)
    runner, _, shape = ph.random_7b_runner(tmp_path, 2)
    ph.fusions_match_unfused(runner, shape.vocab, ("none", "swiglu+cfin+q", "swiglu+cfin", "swiglu+cfin+q"), (1, 2))
    torch.cuda.synchronize()
    assert deferred == {(1, 12288), (2, 12288)}, deferred
    assert all(int((r != 0).sum()) == 0 for r in quant_common._QKV_SUMS.values())


if __name__ == "__main__":
    main(list(CASES) + ["forward"], run_case)
