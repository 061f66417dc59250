""" "+dn2"'s shipped formation, "shfl" (quant_hgemvr DNORM2 2, session 21's "mode 7"): lane j of each 16-lane segment
loads the raw values of u pair word j (two fp32 sums, two h halves, one word of the pair-ordered norm weight,
model.weights.norm_pairs), the look-ahead carries them, and where the tile is used the lane forms its word and 16
shfl.sync give the segment all 16. It keeps the per-thread formation's ("thread") roundings, so the deferred sums,
h' and slot equal "thread"'s bit for bit: at split 2 (two fp32 atomic adds onto zero per value: order-free) the test
asserts torch.equal (interpreter: small shapes, where "shfl" computes the per-thread values from the pair-ordered
weight; CUDA: the 7B batch-1 qkv and gate/up shapes at the H200 picks' hgemvr 1/64/128, where the shuffles run); at
the picks' own splits (8, 4) against norm-then-GEMV. Offline (CPU, no GPU; sm_90 builds of the 7B qkv and gate/up
launches, without and with PDL, with zero weights): the lane contract (quant_hgemvr.shfl_ttgir_problems, which the
runtime guard verify_shfl_kernel runs once per compiled variant on CUDA): the load asm sites (%laneid) in the form asm's
layout, one with 16 lanes along N at the low lane bits (threadsPerWarp [1, 2, 16], order [2, 0, 1]: a shuffle segment is
one word row, what quant_hgemvr.shfl_layout_ok admits), no [1, 4, 1] tensor moved between layouts, and one formation +
16 shfl.sync.idx in the loop; the check failing on edited TTGIR, the guard raising there (SHFL_STRICT) or, as shipped,
logging and turning "+dn2" off (SHFL_BROKEN: dn2_form, _dn_picks on CUDA); kernels.pdl's load / store order. The launch
checks (in-process: no kernel runs), the dnorm2 alignment refusals, and _dn2_rows' chunked path (a slice past
DN2_ONE_LOAD). GPU only: the guard remembers the launched "shfl" variant. (The shuffles' index math, run as PTX on the
CPU: test_dn2_shfl_emu.)
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any

import dn2_cases as dc
import pytest
import torch
from hgemv_variants import make_case, with_gpu_cases


@pytest.mark.parametrize("case_id", with_gpu_cases(dc.EQ_CASES, dc.GPU_EQ))
def test_shfl_equals_thread_bit_for_bit(case_id: str) -> None:
    res = dc.result(case_id)
    assert "error" not in res, res.get("error")
    assert res["forms"] == ["thread", "shfl"], res
    assert res["sums"] and res["h"] and res["slot"], res
    assert res["nonzero"] > res["numel"] // 2, res  # (not two empty results)
    assert res["h_exact"] and res["err"] <= 4e-3, res  # ("thread" against norm-then-GEMV: right, not just equal)


@pytest.mark.parametrize("case_id", with_gpu_cases([], dc.GPU_REF))
def test_shfl_at_the_7b_splits_matches_norm_then_gemv(case_id: str) -> None:
    res = dc.result(case_id)
    assert "error" not in res, res.get("error")
    for form in ("thread", "shfl"):
        r = res[form]
        assert r["finite"] and r["h_exact"] and r["err"] <= 4e-3, (form, r)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: the guard checks a launched kernel")
def test_runtime_guard_checks_the_launched_shfl_kernel() -> None:
    """On CUDA launch_hgemvr checks each compiled "shfl" variant's TTGIR at its first launch (verify_shfl_kernel):
    after the 7B gate/up shape's "shfl" launch (the eq case: right results) exactly its one variant is remembered."""
    from inlaid_worker.kernels import quant_hgemvr as q

    q._SHFL_VERIFIED.clear()
    res = dc.result("eq-gu-7b")
    assert "error" not in res and res["forms"] == ["thread", "shfl"] and res["sums"], res
    assert len(q._SHFL_VERIFIED) == 1, q._SHFL_VERIFIED


def test_norm_pairs_and_launch_checks() -> None:
    """norm_pairs' order; the launch refuses "shfl" without the pair-ordered weight, an unknown form, and (use_asm:
    this process has no TRITON_INTERPRET) "shfl" wherever shfl_layout_ok does not hold; deferred_norm.dn2_form picks
    "shfl" exactly where it holds and the pairs exist. Nothing is launched (every call raises first)."""
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.quant_hgemv import use_asm
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr, shfl_layout_ok
    from inlaid_worker.model.weights import norm_pairs

    assert use_asm()
    w16 = torch.arange(16, dtype=torch.float16)
    assert norm_pairs(w16).tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]  # type: ignore[union-attr]
    assert norm_pairs(w16[:12]) is None and norm_pairs(w16.float()) is None
    k, n = 256, 128
    _, wq, _ = make_case("checks", k, n, 1, 128, False, False, "gptq", "cpu")
    h = torch.zeros(1, k, dtype=torch.float16)
    g = torch.ones(k, dtype=torch.float16)
    dn2 = (torch.zeros(1, k), h, torch.zeros_like(h), g, torch.zeros(4))
    kw: dict[str, Any] = dict(finish=True, defer=True, sums=torch.zeros(n * 2), dnorm2=dn2)
    bad = {  # (block_m, block_n, block_k, num_warps, burst, pin, form, pairs)
        "no_pairs": (1, 64, 128, 2, False, False, "shfl", None),
        "short_pairs": (1, 64, 128, 2, False, False, "shfl", g[:128]),
        "form": (1, 64, 128, 2, False, False, "mode7", norm_pairs(g)),
        "block_n": (1, 32, 128, 2, False, False, "shfl", norm_pairs(g)),
        "block_k": (1, 64, 64, 2, False, False, "shfl", norm_pairs(g)),
        "block_m": (2, 64, 128, 2, False, False, "shfl", norm_pairs(g)),
        "warps": (1, 64, 128, 4, False, False, "shfl", norm_pairs(g)),
        "burst": (1, 64, 128, 2, True, False, "shfl", norm_pairs(g)),
        "pin": (1, 64, 128, 2, False, True, "shfl", norm_pairs(g)),
    }
    for name, (bm, bn, bk, nw, burst, pin, form, pairs) in bad.items():
        with pytest.raises(ValueError, match="dnorm2"):
            launch_hgemvr(h, wq, bm, bn, bk, 2, nw, h, burst=burst, pin=pin, dn2_form=form, dn2_pairs=pairs, **kw)
        assert name in ("no_pairs", "short_pairs", "form") or not shfl_layout_ok(bm, bn, bk, nw, burst, pin, n), name
    assert shfl_layout_ok(1, 64, 128, 2, False, False, n) and not shfl_layout_ok(1, 64, 128, 2, False, False, 96)
    cfg = dc.cfg("hgemvr", 1, 128, 2)
    assert dn.dn2_form(cfg, wq, norm_pairs(g)) == "shfl" and dn.dn2_form(cfg, wq, None) == "thread"
    assert dn.dn2_form(dc.cfg("hgemvrb", 1, 128, 2), wq, norm_pairs(g)) == "thread"
    assert dn.dn2_form(dc.cfg("hgemvr", 1, 64, 2), wq, norm_pairs(g)) == "thread"


def test_dnorm2_alignment_checks() -> None:
    """launch_hgemvr refuses (ValueError, before any launch) a dnorm2 buffer that "thread"'s 16-byte vector loads
    (weight, h, sums; _dn2_rows' h_out) cannot read: each of sums, h, h_out, the norm weight and (with "shfl") its
    pair-ordered copy 2 or 4 bytes off a 16-byte boundary, h's row stride not a multiple of 8 halves, the sums' not
    of 4 floats; the same arguments aligned pass the check (quant_hgemvr._check_dnorm2, which runs nothing)."""
    from inlaid_worker.kernels.quant_hgemvr import _check_dnorm2, launch_hgemvr
    from inlaid_worker.model.weights import norm_pairs

    k, n = 256, 128
    _, wq, _ = make_case("align", k, n, 1, 128, False, False, "gptq", "cpu")
    f16 = torch.float16

    def off(t: torch.Tensor, by: int, width: int) -> torch.Tensor:
        """t's values in a fresh buffer `by` elements in (a row stride of `width`)."""
        buf = torch.zeros(*t.shape[:-1], width, dtype=t.dtype)
        return buf[..., by : by + t.shape[-1]].copy_(t)

    g = torch.ones(k, dtype=f16)
    good = dict(sums=torch.zeros(1, k), h=torch.zeros(1, k, dtype=f16), h_out=torch.zeros(1, k, dtype=f16), weight=g,
                pairs=norm_pairs(g))  # fmt: skip
    bad = {  # (form, what changes, the message)
        "sums": ("thread", dict(sums=off(good["sums"], 1, k + 4)), "sums must be 16-byte aligned"),
        "h": ("thread", dict(h=off(good["h"], 1, k + 8), h_out=off(good["h_out"], 0, k + 8)),
              "h must be 16-byte aligned"),
        "h_out": ("thread", dict(h=off(good["h"], 0, k + 8), h_out=off(good["h_out"], 1, k + 8)),
                  "h_out must be 16-byte aligned"),
        "weight": ("thread", dict(weight=off(g, 1, k + 8)), "the norm weight must be 16-byte aligned"),
        "weight_shfl": ("shfl", dict(weight=off(g, 2, k + 8)), "the norm weight must be 16-byte aligned"),
        "pairs": ("shfl", dict(pairs=off(good["pairs"], 2, k + 8)), "pair-ordered norm weight must be 16-byte"),
        "h_stride": ("thread", dict(h=off(good["h"], 0, k + 4), h_out=off(good["h_out"], 0, k + 4)),
                     "row stride .* got 260 and 256"),
        "sums_stride": ("shfl", dict(sums=off(good["sums"], 0, k + 2)), "row stride .* got 256 and 258"),
    }  # fmt: skip
    for name, (form, change, msg) in bad.items():
        a = good | change
        dn2 = (a["sums"], a["h"], a["h_out"], a["weight"], torch.zeros(4))
        with pytest.raises(ValueError, match=f"dnorm2: .*{msg}"):
            launch_hgemvr(a["h"], wq, 1, 64, 128, 2, 2, a["h"], finish=True, defer=True, sums=torch.zeros(n),
                          dnorm2=dn2, dn2_form=form, dn2_pairs=a["pairs"])  # fmt: skip
        assert name  # (each refusal is its own)
    for form in ("thread", "shfl"):  # the control: aligned, the check passes
        dn2 = (good["sums"], good["h"], good["h_out"], g, torch.zeros(4))
        _check_dnorm2(good["h"], wq, dn2, True, True, (None,) * 4, form, good["pairs"], True)


@pytest.mark.parametrize("case_id", with_gpu_cases(dc.ROWS_CASES, []))
def test_dn2_rows_in_chunks_match_norm_then_gemv(case_id: str) -> None:
    """_dn2_rows' chunked path (BLOCK_M x its slice past DN2_ONE_LOAD: BLOCK_K values a row at a time): h' exact, h
    kept, the slot's sum(h'^2), the consumer's sums times r against norm-then-GEMV; 3 rows in a block of 4."""
    import triton
    from inlaid_worker.kernels.quant_hgemvr import DN2_ONE_LOAD

    k, n, m, kind, bm, bk, split, *_ = dc.ALL[case_id]
    assert triton.next_power_of_2(k // bk // split * bk) * bm > DN2_ONE_LOAD  # (the chunked path)
    res = dc.result(case_id)
    assert "error" not in res, res.get("error")
    assert res["form"] == "thread" and res["h_exact"] and res["h_kept"] and res["finite"], res
    assert res["slot_err"] <= 1e-5 and res["dirty"] == 0, res
    assert res["err"] <= 4e-3, res


OFFLINE = {"qkv": (4096, 12288, 8), "gu": (4096, 22016, 4)}  # 7B batch-1 consumer shapes at the H200 picks' splits


@functools.cache
def _offline(shape: str, gdc: int) -> tuple[Any, Any, tuple, dict]:
    """gemv_dnorm2's "shfl" launch at a 7B pick (hgemvr 1/64/128, cap 80) as the decode graphs make it, recorded
    (nothing runs) and built for sm_90 offline with PDL mode gdc (1: the decode graphs'; 0: none): (compiled kernel,
    fn, args, kwargs). Zero weights (only shapes, strides and dtypes reach the build); cached for this process."""
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.gptq_packing import GPTQWeight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.weights import norm_pairs
    from sm90_build import compile_sm90, record  # type: ignore[import-not-found]

    k, n, split = OFFLINE[shape]
    w = GPTQWeight(torch.zeros(k // 8, n, dtype=torch.int32), torch.zeros(k // 128, n // 8, dtype=torch.int32),
                   torch.zeros(k // 128, n, dtype=torch.float16), None, 4, 128, False, 1, k, n)  # fmt: skip
    h = torch.zeros(1, k, dtype=torch.float16)
    g = torch.ones(k, dtype=torch.float16)
    cfg = QMMConfig(1, 64, 128, split, 2, 1, False, "hgemvr")
    seen = [s for s in record(lambda: dn.gemv_dnorm2(torch.zeros(1, k), h, torch.zeros_like(h), g, w, cfg,
                                                     torch.zeros(4), torch.zeros(n), norm_pairs(g)))
            if s[0].__name__ == "_hgemvr_kernel"]  # fmt: skip
    assert len(seen) == 1, seen
    fn, args, kwargs = seen[0]
    kwargs = dict(kwargs, USE_GDC=gdc)
    if gdc == 0:
        kwargs.pop("launch_pdl", None)
    return compile_sm90(fn, args, dict(kwargs)), fn, args, kwargs


@pytest.mark.parametrize("gdc", [0, 1])
@pytest.mark.parametrize("shape", list(OFFLINE))
def test_offline_shfl_lane_contract(shape: str, gdc: int) -> None:
    """The shipped configuration's sm_90 build (7B qkv and gate/up, without and with PDL): its TTGIR keeps "shfl"'s
    lane contract (quant_hgemvr.shfl_ttgir_problems, the runtime guard's check: the load asm sites, which return
    per-lane values, in the form asm's layout, the verified one, and no [1, 4, 1] tensor moved between layouts), the
    guard accepts the compiled kernel, and its PTX forms u once a tile: 16 shfl.sync.idx, two lane-indexed loads."""
    from inlaid_worker.kernels.quant_hgemvr import (
        _SHFL_VERIFIED,
        SHFL_LAYOUT,
        _tensor_types,
        shfl_ttgir_problems,
        verify_shfl_kernel,
    )

    ck, _, _, kwargs = _offline(shape, gdc)
    assert kwargs["DNORM2"] == 2 and kwargs["maxnreg"] == 80 and kwargs["USE_GDC"] == gdc, kwargs
    ttgir, ptx = ck.asm["ttgir"], ck.asm["ptx"]
    assert shfl_ttgir_problems(ttgir) == []
    asm = [ln for ln in ttgir.splitlines() if "tt.elementwise_inline_asm" in ln]
    loads = [ln for ln in asm if "%laneid" in ln]
    forms = [ln for ln in asm if "shfl.sync.idx" in ln]
    assert len(loads) == 2 and len(forms) == 1, (len(loads), len(forms))  # first tile + look-ahead; one formation
    load_layouts = {enc for ln in loads for _, enc in _tensor_types(ln)}
    form_layouts = {enc for ln in forms for _, enc in _tensor_types(ln)}
    assert len(load_layouts) == 1 and load_layouts == form_layouts, (load_layouts, form_layouts)
    (name,) = form_layouts
    decl = re.search(rf"^{name} = (.*)$", ttgir, re.M)
    assert decl is not None and all(f in decl.group(1) for f in SHFL_LAYOUT), decl
    assert not [ln for ln in ttgir.splitlines() if "ttg.convert_layout" in ln and "tensor<1x4x1x" in ln]
    text = forms[0].replace("\\0A", "\n")
    assert text.count("shfl.sync.idx.b32") == 16 and text.count("cvt.rn.f16x2.f32") == 1, text[:300]
    assert text.count("add.rn.f16x2") == 1 and text.count("mul.rn.f16x2") == 1, text[:300]
    assert ptx.count("shfl.sync.idx.b32") == 16 and ptx.count("mul.rn.f16x2") == 1, "u formed more than once a tile"
    assert ptx.count("%laneid") == 2  # the lane's word: the loads of the first tile and of the look-ahead
    assert "ld.global.v4.f32" not in ptx  # ("thread"'s per-thread sums loads)
    verify_shfl_kernel(ck)  # the runtime guard on the real compiled kernel: passes, remembered
    assert ck.hash in _SHFL_VERIFIED


@functools.cache
def _broken_ttgirs() -> dict[str, str]:
    """The 7B qkv build's TTGIR edited as a layout choice could break "shfl"'s lane contract: a load site in another
    layout (an alias or a slice encoding), a convert_layout or a shared-memory round trip of a [1, 4, 1] tensor, the
    layout's lanes or order other than verified, a missing load or form site."""
    from inlaid_worker.kernels.quant_hgemvr import _tensor_types

    good = _offline("qkv", 1)[0].asm["ttgir"]
    lines = good.splitlines()
    li = next(i for i, ln in enumerate(lines) if "elementwise_inline_asm" in ln and "%laneid" in ln)
    fi = next(i for i, ln in enumerate(lines) if "elementwise_inline_asm" in ln and "shfl.sync.idx" in ln)
    (enc,) = {e for _, e in _tensor_types(lines[li])}
    other = next(ln.split(" = ")[0] for ln in lines if ln.startswith("#blocked") and not ln.startswith(f"{enc} = "))
    di = next(i for i, ln in enumerate(lines) if ln.startswith(f"{enc} = "))

    def edit(i: int, old: str, new: str) -> str:
        assert old in lines[i], (old, lines[i][:200])
        return "\n".join(lines[:i] + [lines[i].replace(old, new)] + lines[i + 1 :])

    def insert(i: int, line: str) -> str:
        return "\n".join(lines[: i + 1] + [line] + lines[i + 1 :])

    return {
        "load_alias": edit(li, f", {enc}>", f", {other}>"),
        "load_slice": edit(li, f", {enc}>", f", #ttg.slice<{{dim = 0, parent = {enc}}}>>"),
        "convert": insert(
            li,
            f"    %c = ttg.convert_layout %out#0 : tensor<1x4x1xf32, {enc}> -> tensor<1x4x1xf32, {other}> loc(#loc1)",
        ),  # fmt: skip
        "smem": insert(
            li,
            f"    %m = ttg.local_alloc %out#0 : (tensor<1x4x1xf32, {enc}>) -> "
            "!ttg.memdesc<1x4x1xf32, #shared, #smem> loc(#loc1)",
        ),  # fmt: skip
        "lanes": edit(di, "threadsPerWarp = [1, 2, 16]", "threadsPerWarp = [1, 1, 32]"),
        "order": edit(di, "order = [2, 0, 1]", "order = [0, 2, 1]"),
        "no_form": "\n".join(lines[:fi] + lines[fi + 1 :]),
        "no_load": "\n".join(ln for ln in lines if "%laneid" not in ln),
    }


def test_shfl_ttgir_problems_catch_a_broken_contract(monkeypatch: Any) -> None:
    """shfl_ttgir_problems and the runtime guard in its strict mode (verify_shfl_kernel with SHFL_STRICT: RuntimeError,
    nothing remembered, SHFL_BROKEN left as it was) on each edited TTGIR (_broken_ttgirs); the unedited one passes."""
    from types import SimpleNamespace

    from inlaid_worker.kernels import quant_hgemvr as q

    monkeypatch.setattr(q, "SHFL_STRICT", True)
    monkeypatch.setattr(q, "SHFL_BROKEN", False)
    assert q.shfl_ttgir_problems(_offline("qkv", 1)[0].asm["ttgir"]) == []
    for name, text in _broken_ttgirs().items():
        assert q.shfl_ttgir_problems(text), name
        with pytest.raises(RuntimeError, match="lane contract"):
            q.verify_shfl_kernel(SimpleNamespace(hash=f"edited-{name}", asm={"ttgir": text}))
        assert f"edited-{name}" not in q._SHFL_VERIFIED
    assert q.SHFL_BROKEN is False


@pytest.mark.parametrize("name", ["convert", "lanes"])
def test_a_broken_shfl_kernel_turns_dn2_off(name: str, monkeypatch: Any, caplog: Any, tmp_path: Any) -> None:
    """The runtime guard's serving mode (SHFL_STRICT off, shipped): a compiled "shfl" kernel whose TTGIR breaks the
    lane contract (_broken_ttgirs) logs an error naming INLAID_DECODE_DN2=0 and sets SHFL_BROKEN instead of raising
    (a raise would fail every later batch-1 step: the failing variant is never remembered, no graph stored); after it
    shfl_layout_ok holds nowhere, deferred_norm.dn2_form gives "thread" at the 7B pick it gave "shfl" before, and
    llama_fast._dn_picks on CUDA (a 2-layer tiny int4 model whose picks are forced to that shape, nothing launched)
    returns None: the decode graph's capture, which asks again after its warm-up ran the guard, records
    "swiglu+cfin+g" (DecodeGraphs._capture; the replay overwrites the warm-up's results)."""
    import logging
    from types import SimpleNamespace

    import dn2_cases as dc
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels import quant_hgemvr as q
    from inlaid_worker.model.llama_fast import _dn_picks, _single
    from inlaid_worker.model.weights import current_pairs

    monkeypatch.setattr(q, "SHFL_STRICT", False)
    monkeypatch.setattr(q, "SHFL_BROKEN", False)  # (restored after the test: the flag is per process)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # (dn2_form's use_asm: the CUDA build, not the interpreter)
    c, w, h = dc.tiny_int4(tmp_path)
    pick = dc.cfg("hgemvr", 1, 128, 2)  # block_m 1, block_n 64, block_k 128, 2 warps: shfl_layout_ok
    monkeypatch.setattr(cf, "config_for", lambda x2, wt: pick)
    monkeypatch.setattr(dn, "config_for", lambda x2, wt: pick)
    gu = _single(w.layers[1].gate_up)
    pairs_post = current_pairs(w.layers[1])[1]  # type: ignore[index]

    assert dn.dn2_form(pick, gu, pairs_post) == "shfl" and _dn_picks(w, c, h, cuda=True) is not None
    with caplog.at_level(logging.ERROR, logger=q.__name__):
        q.verify_shfl_kernel(SimpleNamespace(hash=f"edited-{name}", asm={"ttgir": _broken_ttgirs()[name]}))
    assert q.SHFL_BROKEN is True and f"edited-{name}" not in q._SHFL_VERIFIED
    assert [r.levelno for r in caplog.records] == [logging.ERROR], caplog.records
    assert "lane contract" in caplog.text and "INLAID_DECODE_DN2=0" in caplog.text
    assert not q.shfl_layout_ok(1, 64, 128, 2, False, False, 22016)
    assert dn.dn2_form(pick, gu, pairs_post) == "thread"
    assert _dn_picks(w, c, h, cuda=True) is None  # on CUDA: no "+dn2" (the step runs "swiglu+cfin+g")
    assert _dn_picks(w, c, h, cuda=False) is not None  # (off CUDA the per-thread formation runs, as always)


def test_offline_pdl_order_of_the_7b_qkv_launch() -> None:
    """kernels.pdl's rules on the 7B qkv "shfl" build's PTX with PDL (test_pdl_ptx_order's checker): only weights load
    before the wait (never the producer's sums, h, the pair-ordered norm weight or the slot), nothing is stored before
    it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))
    from pdl_ptx_order import analyze  # type: ignore[import-not-found]

    ck, fn, args, kwargs = _offline("qkv", 1)
    assert kwargs["USE_GDC"] == 1 and kwargs["launch_pdl"] is True
    bound = dict(zip(fn.arg_names, args, strict=False)) | kwargs
    names = [
        p.name
        for p in fn.params
        if not (
            p.is_constexpr
            or bound.get(p.name, p.default) is None
            or (
                type(bound.get(p.name, p.default)) is int
                and bound.get(p.name, p.default) == 1
                and not p.do_not_specialize
            )
        )
    ]
    rep = analyze(ck.asm["ptx"])
    assert rep.waits >= 1 and not rep.early_writes and not rep.ret_unwaited, rep
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names)}
    assert {n for n in early if n.endswith("_ptr")} <= {"qw_ptr", "sc_ptr", "qz_ptr"}, early
    assert "qw_ptr" in early, early  # (the checker sees the early weight loads: it can fail)
