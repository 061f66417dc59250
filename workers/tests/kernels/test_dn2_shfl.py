""" "+dn2"'s shipped formation, "shfl" (quant_hgemvr DNORM2 2, session 21's "mode 7"): lane j of each 16-lane segment
loads the raw values of u pair word j (two fp32 sums, two h halves, one word of the pair-ordered norm weight,
model.weights.norm_pairs), the look-ahead carries them, and where the tile is used the lane forms its word and 16
shfl.sync give the segment all 16. It keeps the per-thread formation's ("thread") roundings, so the deferred sums,
h' and slot equal "thread"'s bit for bit: at split 2 (two fp32 atomic adds onto zero per value: order-free) the test
asserts torch.equal (interpreter: small shapes, where "shfl" computes the per-thread values from the pair-ordered
weight; CUDA: the 7B batch-1 qkv and gate/up shapes at the H200 picks' hgemvr 1/64/128, where the shuffles run); at
the picks' own splits (8, 4) against norm-then-GEMV. Offline (CPU, no GPU): the 7B qkv launch's TTGIR puts x's
[1, 4, 1] operands in a layout with 16 lanes along N at the low lane bits (threadsPerWarp [1, 2, 16], order
[2, 0, 1]: a shuffle segment is one word row, what quant_hgemvr.shfl_layout_ok admits), and its PTX has one
formation + 16 shfl.sync.idx in the loop. The launch checks (in-process: no kernel runs).
"""

from __future__ import annotations

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
    dn2 = (torch.zeros(1, k), h, torch.zeros_like(h), g, torch.zeros(4), 1e-5)
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


def test_offline_ttgir_layout_and_ptx_of_the_7b_qkv_launch() -> None:
    """Offline sm_90 build of the 7B batch-1 qkv launch as gemv_dnorm2 makes it (hgemvr 1/64/128 split 8, PDL mode 1,
    cap 80, "shfl"): the layout, the shuffles, and kernels.pdl's load / store order."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import deferred_norm as dn
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.weights import norm_pairs

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))  # (the offline sm_90 build)
    from pdl_ptx_order import analyze  # type: ignore[import-not-found]
    from s16_omerge_sass import compile_sm90, record  # type: ignore[import-not-found]

    hidden, nq = 4096, 12288
    torch.manual_seed(0)
    wq = prepare_gptq_weight(**make_gptq(hidden, nq, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    h = torch.zeros(1, hidden, dtype=torch.float16)
    g = torch.ones(hidden, dtype=torch.float16)
    cfg = QMMConfig(1, 64, 128, 8, 2, 1, False, "hgemvr")
    seen = [s for s in record(lambda: dn.gemv_dnorm2(torch.zeros(1, hidden), h, torch.zeros_like(h), g, wq, cfg,
                                                     torch.zeros(4), 1e-5, torch.zeros(nq), norm_pairs(g)))
            if s[0].__name__ == "_hgemvr_kernel"]  # fmt: skip
    assert len(seen) == 1 and seen[0][2]["DNORM2"] == 2 and seen[0][2]["maxnreg"] == 80, seen[0][2]
    ck = compile_sm90(*seen[0][:2], dict(seen[0][2]))
    ttgir, ptx = ck.asm["ttgir"], ck.asm["ptx"]
    # the shuffle asm's operands: [1, 4, 1] tensors in a layout with 16 lanes along N, N the fastest (low lane bits)
    asm_ops = [ln for ln in ttgir.splitlines() if "elementwise_inline_asm" in ln and "shfl.sync.idx" in ln]
    assert len(asm_ops) == 1, len(asm_ops)  # one formation site: where the tile is used, in the loop
    layouts = {m.group(1) for m in re.finditer(r"tensor<1x4x1x[^,]*, (#\w+)>", asm_ops[0])}
    assert len(layouts) == 1, layouts
    (name,) = layouts
    decl = re.search(rf"^{name} = (.*)$", ttgir, re.M)
    assert decl is not None
    assert "threadsPerWarp = [1, 2, 16]" in decl.group(1) and "order = [2, 0, 1]" in decl.group(1), decl.group(1)
    assert "sizePerThread = [1, 1, 4]" in decl.group(1) and "warpsPerCTA = [1, 2, 1]" in decl.group(1), decl.group(1)
    text = asm_ops[0].replace("\\0A", "\n")
    assert text.count("shfl.sync.idx.b32") == 16 and text.count("cvt.rn.f16x2.f32") == 1, text[:300]
    assert text.count("add.rn.f16x2") == 1 and text.count("mul.rn.f16x2") == 1, text[:300]
    assert ptx.count("shfl.sync.idx.b32") == 16 and ptx.count("mul.rn.f16x2") == 1, "u formed more than once a tile"
    assert ptx.count("%laneid") == 2  # the lane's word: the loads of the first tile and of the look-ahead
    assert "ld.global.v4.f32" not in ptx  # ("thread"'s per-thread sums loads)
    # kernels.pdl's rules on the same PTX (test_pdl_ptx_order's checker): only weights load before the wait (never the
    # producer's sums, h, the pair-ordered norm weight or the slot), nothing is stored before it
    fn, args, kwargs = seen[0]
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
    rep = analyze(ptx)
    assert rep.waits >= 1 and not rep.early_writes and not rep.ret_unwaited, rep
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names)}
    assert {n for n in early if n.endswith("_ptr")} <= {"qw_ptr", "sc_ptr", "qz_ptr"}, early
    assert "qw_ptr" in early, early  # (the checker sees the early weight loads: it can fail)
