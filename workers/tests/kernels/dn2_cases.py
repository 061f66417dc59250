"""The cases of the "+dn2" tests (test_deferred_norm2, test_dn2_shfl): case id -> result, in-process on CUDA; on the
CPU each test file's CPU cases run once in one subprocess under TRITON_INTERPRET=1 (this file as a script with their
ids): the interpreter's start-up and the cases' launches are what these CPU tests cost.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from hgemv_variants import make_case

HERE = Path(__file__).resolve().parent
# consumer kernel cases: (K, N, M, kind, block_m, block_k, split, h scale, reps)
QKV_CASES: dict[str, tuple] = {
    "m1-split2": (256, 128, 1, "hgemvr", 1, 64, 2, 5.0, 1),
    "m3-burst": (256, 64, 3, "hgemvrb", 4, 64, 2, 5.0, 1),  # 2 tiles a program of 3 (past the last: adds 0)
    "m1-large": (256, 64, 1, "hgemvr", 1, 64, 2, 3.0e4, 1),  # |h' w| up to 4.5e4: in range
    "m1-huge": (256, 64, 1, "hgemvr", 1, 64, 2, 6.0e4, 1),  # |h' w| 9e4 > 65504: u overflows (documented)
    "m1-tiny": (256, 64, 1, "hgemvr", 1, 64, 2, 4.0e-4, 1),  # u's half2 products in fp16's subnormals
}
GPU_QKV: dict[str, tuple] = {"qkv-7b-m1": (4096, 12288, 1, "hgemvr", 1, 128, 8, 5.0, 2)}  # the H200 7B pick
# (K, I, N, M, gate/up (kind, block_m, block_k, split), down (kind, block_m, block_k, split))
GU_CASES: dict[str, tuple] = {"gu-m1": (128, 128, 64, 1, ("hgemvr", 1, 64, 2), ("hgemvr", 1, 64, 2))}
GPU_GU: dict[str, tuple] = {"gu-7b-m1": (4096, 11008, 4096, 1, ("hgemvr", 1, 128, 4), ("hgemvr", 1, 128, 22))}
# "shfl" against "thread" at split 2 (order-free sums): (K, N, M, kind, block_m, block_k, split)
EQ_CASES: dict[str, tuple] = {"eq-k128-4tiles": (1024, 64, 1, "hgemvr", 1, 128, 2)}  # 4 tiles a program: the loop
GPU_EQ: dict[str, tuple] = {  # the 7B batch-1 picks (hgemvr 1/64/128), where the shuffles run
    "eq-qkv-7b": (4096, 12288, 1, "hgemvr", 1, 128, 2),
    "eq-gu-7b": (4096, 22016, 1, "hgemvr", 1, 128, 2),
}
GPU_REF: dict[str, tuple] = {  # the picks' own splits, both formations against add_rms_norm + the GEMV on x
    "ref-qkv-7b": (4096, 12288, 1, "hgemvr", 1, 128, 8),
    "ref-gu-7b": (4096, 22016, 1, "hgemvr", 1, 128, 4),
}
CPU_GROUPS = {  # the CPU cases of each test file (run_case's ids), one subprocess each
    "deferred_norm2": (*QKV_CASES, *GU_CASES, "attention", "forward"),
    "dn2_shfl": tuple(EQ_CASES),
}
ALL = {**QKV_CASES, **GPU_QKV, **GU_CASES, **GPU_GU, **EQ_CASES, **GPU_EQ, **GPU_REF}
# _dn2_rows in BLOCK_K chunks (its rows x its slice past quant_hgemvr.DN2_ONE_LOAD: 4 x 512 values): 3 rows in a block of
# 4 (the store mask), 4 tiles a slice; run_qkv against norm-then-GEMV, run with test_dn2_shfl's CPU cases
ROWS_CASES: dict[str, tuple] = {"m3-rows-chunks": (1024, 64, 3, "hgemvr", 4, 128, 2, 5.0, 1)}
ALL.update(ROWS_CASES)
CPU_GROUPS["dn2_shfl"] += tuple(ROWS_CASES)


def cfg(kind: str, bm: int, bk: int, split: int, bn: int = 64) -> Any:
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    return QMMConfig(bm, bn, bk, split, 2, 1, False, kind)


def tiny_int4(tmp: Path) -> tuple[Any, Any, torch.Tensor]:
    """A 2-layer tiny int4 model (hidden / intermediate 256: two K tiles to split) with random norms and their
    pair-ordered copies, written under tmp: its config, its weights (seed 1) and one zero row of h."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.weights import with_norm_pairs

    rm = ph.engine_module("random_model")
    c = load_model_config(rm.write_config(rm.Shape(256, 256, 2, 4, 2, 512), tmp / "tiny"))
    torch.manual_seed(1)
    w = with_norm_pairs(rm.random_weights(c, "int4", torch.device("cpu"), torch.float16, norms="random"))
    return c, w, torch.zeros(1, c.hidden_size, dtype=torch.float16)


def inputs(case_id: str, m: int, k: int, scale: float, device: str) -> tuple:
    """(producer sums fp32, h fp16, norm weight fp16 in [0.5, 1.5), h' = fp16(h + fp16(sums))). scale > 1e3: h of
    that scale in a few channels (weight 1.5 there), 1 elsewhere (Llama's massive activations)."""
    torch.manual_seed(len(case_id))
    big = scale > 1e3
    sums = torch.randn(m, k, device=device) * (1.0 if big else scale) * 0.5
    h = (torch.randn(m, k, device=device) * (1.0 if big else scale)).half()
    g = (torch.rand(k, device=device) + 0.5).half()
    if big:
        h[:, ::61] = scale
        sums[:, ::61] = 0.0
        g[::61] = 1.5
    return sums, h, g, (h.float() + sums.half().float()).half()


def dirty() -> int:
    from inlaid_worker.kernels import quant_common

    return sum(int((ws != 0).sum()) + int((cnt != 0).sum()) for ws, cnt in quant_common._WORKSPACES.values())


def _ref_gemv(x: torch.Tensor, w: Any, bm: int, bk: int, split: int, kind: str) -> torch.Tensor:
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags

    ref = torch.empty(x.shape[0], w.out_features, dtype=torch.float16, device=x.device)
    launch_hgemvr(x, w, bm, 64, bk, split, 2, ref, **hgemvr_flags(kind))
    return ref


def run_qkv(case_id: str, device: str) -> dict[str, Any]:
    """The consumer's deferred sums times r against add_rms_norm + the same GEMV on x, in the formation
    deferred_norm.dn2_form picks."""
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.model.weights import norm_pairs

    k, n, m, kind, bm, bk, split, scale, reps = ALL[case_id]
    _, w, _ = make_case(case_id, k, n, m, 128, False, False, "gptq", device)
    c = cfg(kind, bm, bk, split)
    out: dict[str, Any] = dict(err=0.0, slot_err=0.0, h_exact=True, h_kept=True, dirty=0, finite=True, top_hw=0.0)
    for rep in range(reps):
        sums, h, g, hp = inputs(case_id + str(rep), m, k, scale, device)
        out["form"] = dn.dn2_form(c, w, norm_pairs(g))
        out["top_hw"] = max(out["top_hw"], float((hp.float() * g.float()).abs().max()))
        ref = _ref_gemv(add_rms_norm(hp.clone(), g, 1e-5), w, bm, bk, split, kind)  # today's x: the norm kernel on h'
        h0, h_out = h.clone(), torch.zeros_like(h)
        slot, region = torch.zeros(m, device=device), torch.zeros(m * n, device=device)
        s = dn.gemv_dnorm2(sums, h, h_out, g, w, c, slot, region, norm_pairs(g))
        y = (s * (1.0 / torch.sqrt(slot / k + 1e-5))[:, None]).half()
        out["err"] = max(out["err"], float((y.float() - ref.float()).abs().max() / ref.float().abs().max()))
        ss = (hp.float() ** 2).sum(1)
        out["slot_err"] = max(out["slot_err"], float((slot - ss).abs().max() / ss.max()))
        out["finite"] = out["finite"] and bool(torch.isfinite(y).all())
        out["h_exact"] = out["h_exact"] and bool(torch.equal(h_out, hp))
        out["h_kept"] = out["h_kept"] and bool(torch.equal(h, h0))
        out["dirty"] += dirty()
    return out


def run_gu(case_id: str, device: str) -> dict[str, Any]:
    """The gate/up consumer (deferred) and down's x_norm against today's "+g" pair (gate/up on x, down on its sums)."""
    from inlaid_worker.kernels.consumer_finish import gemv_gu_sums, stand_in_x
    from inlaid_worker.kernels.deferred_norm import dn2_form, down_xnorm, gemv_dnorm2
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import hgemvr_flags
    from inlaid_worker.model.weights import norm_pairs

    k, inter, n, m, pick_gu, pick_d = ALL[case_id]
    _, w_gu, _ = make_case(case_id, k, 2 * inter, m, 128, False, False, "gptq", device)
    _, w_d, _ = make_case(case_id + "-down", inter, n, m, 128, False, False, "gptq", device)
    cfg_gu, cfg_d = cfg(*pick_gu), cfg(*pick_d)
    sums, h, g, hp = inputs(case_id, m, k, 3.0, device)
    gu_ref = gemv_gu_sums(add_rms_norm(hp.clone(), g, 1e-5), w_gu, cfg_gu)
    assert gu_ref is not None
    y_ref = torch.empty(m, n, dtype=torch.float16, device=device)
    launch_hgemvr(stand_in_x(m, inter, device), w_d, cfg_d.block_m, 64, cfg_d.block_k, cfg_d.split_k, 2, y_ref,
                  x_sums=gu_ref, **hgemvr_flags(cfg_d.kind))  # fmt: skip
    gu_ref.zero_()  # (the region's contract: its norm would clear it)
    h0, h_out = h.clone(), torch.zeros_like(h)
    slot = torch.zeros(m, device=device)
    gu = gemv_dnorm2(sums, h, h_out, g, w_gu, cfg_gu, slot, torch.zeros(m * 2 * inter, device=device),
                     norm_pairs(g))  # fmt: skip
    ss = (hp.float() ** 2).sum(1)
    d_sums = down_xnorm(gu, w_d, cfg_d, slot, k, 1e-5, torch.zeros(m * n, device=device))
    top = float(y_ref.float().abs().max())
    return dict(err=float((d_sums.half().float() - y_ref.float()).abs().max()) / top,
                slot_err=float((slot - ss).abs().max() / ss.max()), h_exact=bool(torch.equal(h_out, hp)),
                h_kept=bool(torch.equal(h, h0)), dirty=dirty(), finite=bool(torch.isfinite(d_sums).all()),
                form=dn2_form(cfg_gu, w_gu, norm_pairs(g)))  # fmt: skip


def _forced(form: str, case_id: str, device: str) -> tuple:
    """gemv_dnorm2 with DN2_FORM forced to `form` (the interpreter's "auto" is "thread")."""
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.model.weights import norm_pairs

    k, n, m, kind, bm, bk, split = ALL[case_id]
    _, w, _ = make_case(case_id, k, n, m, 128, False, False, "gptq", device)
    sums, h, g, hp = inputs("eq" + str(len(case_id)), m, k, 5.0, device)
    h_out, slot, region = torch.zeros_like(h), torch.zeros(m, device=device), torch.zeros(m * n, device=device)
    saved = dn.DN2_FORM
    try:
        dn.DN2_FORM = form
        c = cfg(kind, bm, bk, split)
        got = dn.dn2_form(c, w, norm_pairs(g))
        s = dn.gemv_dnorm2(sums, h, h_out, g, w, c, slot, region, norm_pairs(g)).clone()
    finally:
        dn.DN2_FORM = saved
    return got, s, h_out, slot, (w, g, hp)


def run_eq(case_id: str, device: str) -> dict[str, Any]:
    """ "shfl" against "thread": sums, h' and slot compared bit for bit; "thread" times r against add_rms_norm + the
    GEMV on x (err) and h' against the reference's."""
    from inlaid_worker.kernels.fused_norm import add_rms_norm

    k, n, m, kind, bm, bk, split = ALL[case_id]
    f2, s2, h2, slot2, (w, g, hp) = _forced("thread", case_id, device)
    f, s, h_out, slot, _ = _forced("shfl", case_id, device)
    ref = _ref_gemv(add_rms_norm(hp.clone(), g, 1e-5), w, bm, bk, split, kind)
    y = (s2 / torch.sqrt(slot2 / k + 1e-5)[:, None]).half()
    return dict(forms=[f2, f], sums=bool(torch.equal(s, s2)), h=bool(torch.equal(h_out, h2)),
                slot=bool(torch.equal(slot, slot2)), max_diff=float((s - s2).abs().max()),
                nonzero=int((s != 0).sum()), numel=s.numel(), h_exact=bool(torch.equal(h2, hp)),
                err=float((y.float() - ref.float()).abs().max() / ref.float().abs().max()))  # fmt: skip


def run_ref(case_id: str, device: str) -> dict[str, Any]:
    """Both formations at the picks' own splits against add_rms_norm + the GEMV on x."""
    from inlaid_worker.kernels.fused_norm import add_rms_norm

    k, n, m, kind, bm, bk, split = ALL[case_id]
    out: dict[str, Any] = {}
    for form in ("thread", "shfl"):
        _, s, h_out, slot, (w, g, hp) = _forced(form, case_id, device)
        ref = _ref_gemv(add_rms_norm(hp.clone(), g, 1e-5), w, bm, bk, split, kind)
        y = (s / torch.sqrt(slot / k + 1e-5)[:, None]).half()
        out[form] = dict(err=float((y.float() - ref.float()).abs().max() / ref.float().abs().max()),
                         h_exact=bool(torch.equal(h_out, hp)), finite=bool(torch.isfinite(y).all()))  # fmt: skip
    return out


def run_attention(device: str) -> dict[str, Any]:
    """row_rope_decode reading fp32 qkv sums with rnorm (each value fp16(r * sum)) against reading the fp16 rows
    fp16(r * sums) (2 rows, 4 heads over 2 KV heads, head dim 32, 40 cached tokens); its rnorm argument checks."""
    from inlaid_worker.kernels.decode_row import row_rope_decode

    torch.manual_seed(7)
    s, heads, kvh, hd, bs, ctx = 2, 4, 2, 32, 16, 40
    k = 128
    qkv = torch.randn(s, (heads + 2 * kvh) * hd, device=device) * 30.0  # sums without r
    slot = torch.tensor([k * 900.0, k * 0.04], device=device)  # rms 30 and 0.2
    r = 1.0 / torch.sqrt(slot / k + 1e-5)
    cos = torch.randn(s, hd, device=device).half()
    sin = torch.randn(s, hd, device=device).half()
    kc = torch.randn(8, bs, kvh, hd, device=device).half()
    vc = torch.randn(8, bs, kvh, hd, device=device).half()
    tables = torch.arange(s * 3, device=device, dtype=torch.int32).reshape(s, 3)
    lens = torch.full((s,), ctx, device=device, dtype=torch.int32)
    slots = (tables[:, (ctx - 1) // bs].long() * bs + (ctx - 1) % bs).to(torch.int64)
    base = {} if device == "cuda" else None
    k1, v1, k2, v2 = kc.clone(), vc.clone(), kc.clone(), vc.clone()
    ref = row_rope_decode((qkv * r[:, None]).half(), cos, sin, slots, k1, v1, tables, lens, 0.1, heads, base=base)
    got = row_rope_decode(qkv, cos, sin, slots, k2, v2, tables, lens, 0.1, heads, base=base, sums=True,
                          rnorm=(slot, k, 1e-5))  # fmt: skip
    bad = {}
    for name, kw in dict(no_sums=dict(rnorm=(slot, k, 1e-5)), short=dict(sums=True, rnorm=(slot[:1], k, 1e-5))).items():
        try:
            row_rope_decode(qkv if name != "no_sums" else qkv.half(), cos, sin, slots, kc.clone(), vc.clone(), tables,
                            lens, 0.1, heads, base=base, **kw)  # fmt: skip
            bad[name] = "ran"
        except ValueError:
            bad[name] = "ValueError"
    return dict(out=float((got.float() - ref.float()).abs().max()), k=float((k2.float() - k1.float()).abs().max()),
                v=float((v2.float() - v1.float()).abs().max()), bad=bad)  # fmt: skip


def run_forward(device: str) -> dict[str, Any]:
    """One decode step (2 rows) of a 2-layer tiny int4 Llama (hidden 128, intermediate 128, 4 heads, 2 KV heads; input
    norms other than the post-attention ones, both in [0.5, 1.5), their pair-ordered copies from with_norm_pairs)
    through forward_fast with a split-K row GEMV forced for every GEMV (block_n 128, block_k 64: split in two) and the
    row attention: "swiglu+cfin+q+g+dn2" (the interpreter: "shfl" forced, its values from the pair-ordered weights;
    CUDA: the shipped "auto", "thread" at these unverified layouts) against "swiglu+cfin+g", then the fallback where
    the gate/up pick cannot defer (qkv's can, so a "+q" left on would show) against "swiglu+cfin+g" run the same way
    (the LoRA fallback: test_deferred_norm2's GPU test)."""
    import tempfile
    from dataclasses import replace

    import pdl_helpers as ph  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.model import llama_fast
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast
    from inlaid_worker.model.weights import with_norm_pairs

    rm = ph.engine_module("random_model")
    c = load_model_config(rm.write_config(rm.Shape(128, 128, 2, 4, 2, 512), Path(tempfile.mkdtemp()) / "tiny"))
    torch.manual_seed(1)
    w = rm.random_weights(c, "int4", torch.device(device), torch.float16)
    norms = [((torch.rand(c.hidden_size) + 0.5).half().to(device), (torch.rand(c.hidden_size) + 0.5).half().to(device))
             for _ in w.layers]  # fmt: skip
    w = with_norm_pairs(replace(w, layers=tuple(replace(layer, input_norm=a, post_norm=b)
                                                for layer, (a, b) in zip(w.layers, norms, strict=True))))  # fmt: skip
    d = ph.tiny_decode_inputs(c, device)
    saved = (cf.config_for, dn.config_for, dn.launch_hgemvr, llama_fast.row_rope_for, llama_fast.add_rms_norm,
             llama_fast.add_rms_norm_sums, dn.DN2_FORM)  # fmt: skip
    calls: list[str] = []

    def spy(*args: Any, **kw: Any) -> Any:
        calls.append(kw["dn2_form"] if kw.get("dnorm2") is not None else "xnorm" if kw.get("x_norm") is not None
                     else "defer")  # fmt: skip
        return saved[2](*args, **kw)

    def norm_spy(label: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            calls.append(label)
            return fn(*args, **kw)

        return wrapped

    gu_parts = [layer.gate_up.parts[0] for layer in w.layers]  # type: ignore[attr-defined]

    def force(gu_split: int = 2) -> None:
        def config_for(x2: torch.Tensor, wt: Any) -> Any:
            return cfg("hgemvr", 2, 64, gu_split if any(wt is p for p in gu_parts) else 2, bn=128)

        cf.config_for = dn.config_for = config_for

    def run(fusion: str) -> torch.Tensor:
        return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                            DecodeLayout(d["tables"], d["lens"], 1, fusion), None).float()  # fmt: skip

    out: dict[str, Any] = {}
    try:
        dn.launch_hgemvr = spy
        llama_fast.row_rope_for = lambda rows, rep, dev: {}  # the row attention with rotary inside (CUDA's default)
        llama_fast.add_rms_norm = norm_spy("norm", saved[4])
        llama_fast.add_rms_norm_sums = norm_spy("norm_sums", saved[5])
        dn.DN2_FORM = "auto" if device == "cuda" else "shfl"
        force()
        base = run("swiglu+cfin+g")
        calls.clear()
        got = run("swiglu+cfin+q+g+dn2")
        out["dn2"] = dict(form="thread" if device == "cuda" else "shfl", err=float((got - base).norm() / base.norm()),
                          calls=list(calls),
                          finite=bool(torch.isfinite(got).all()), dirty=dirty())  # fmt: skip
        force(gu_split=1)  # layer_picks: gate/up cannot defer (qkv could: a "+q" left on would show)
        ref = run("swiglu+cfin+g")
        calls.clear()
        fell = run("swiglu+cfin+q+g+dn2")
        out["gu_nosplit"] = dict(same=bool(torch.equal(fell, ref)),
                                  dn2_calls=sum(x in ("thread", "shfl", "xnorm") for x in calls))  # fmt: skip
    finally:
        (cf.config_for, dn.config_for, dn.launch_hgemvr, llama_fast.row_rope_for, llama_fast.add_rms_norm,
         llama_fast.add_rms_norm_sums, dn.DN2_FORM) = saved  # fmt: skip
    return out


def run_case(case_id: str, device: str) -> dict[str, Any]:
    if case_id == "forward":
        return run_forward(device)
    if case_id == "attention":
        return run_attention(device)
    if case_id.startswith("eq"):
        return run_eq(case_id, device)
    if case_id.startswith("ref"):
        return run_ref(case_id, device)
    return run_gu(case_id, device) if case_id.startswith("gu") else run_qkv(case_id, device)


@functools.cache
def _cpu_results(group: str) -> dict[str, Any]:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{HERE.parents[1]}{os.pathsep}{HERE}")
    proc = subprocess.run([sys.executable, __file__, *CPU_GROUPS[group]], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted dn2 cases failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def result(case_id: str) -> dict[str, Any]:
    """The case's result: in-process on CUDA; on the CPU from its group's one interpreted run (CPU_GROUPS)."""
    if torch.cuda.is_available():
        return run_case(case_id, "cuda")
    return _cpu_results(next(g for g, ids in CPU_GROUPS.items() if case_id in ids))[case_id]


if __name__ == "__main__":
    from hgemv_variants import main

    main([c for ids in CPU_GROUPS.values() for c in ids], run_case)
