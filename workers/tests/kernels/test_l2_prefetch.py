"""kernels.l2_prefetch: the prefetch plan (pure functions, CPU), the kernels that take a plan (add_rms_norm with its
extra prefetch-only programs, decode_row.row_rope_decode) giving the same outputs with and without one (in one
subprocess under Triton's interpreter on the CPU, where nothing is issued; in-process on CUDA, where the prefetches
run: outputs must be bit-identical, a prefetch is only a hint), and llama_fast's plan for a decode step."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, main
from inlaid_worker.kernels import l2_prefetch as L
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.kernels.quant_common import split_iters


def _weight(k: int, n: int, g: int = 128, bits: int = 4) -> GPTQWeight:
    return GPTQWeight(qweight=torch.zeros(k * bits // 32, n, dtype=torch.int32),
                      qzeros=torch.zeros(k // g, n * bits // 32, dtype=torch.int32),
                      scales=torch.zeros(k // g, n, dtype=torch.float16), perm=None, bits=bits, group_size=g,
                      sym=False, zero_offset=0, in_features=k, out_features=n)  # fmt: skip


def _covered(descs: list[L.Desc]) -> set[tuple[int, int]]:
    return {r for d in descs for r in d.ranges()}


def test_gemv_descs_cover_the_same_tiles_of_every_split_program() -> None:
    w = _weight(4096, 22016)
    iters, split = split_iters(4096 // 128, 4)  # 8 tiles a program, 4 programs along K
    ds = L.gemv_descs(w, split, iters, 128, 0.25, 0.5, chunk=16384)
    assert len(ds) == 3  # words, scales, zeros
    q, sc, z = ds
    row = 22016 * 4
    base = w.qweight.data_ptr()
    # tiles 2..3 of programs 0..3: word rows 16 * (8 p + 2) .. 16 * (8 p + 4)
    assert q.ranges() == [(base + 16 * (8 * p + 2) * row, base + 16 * (8 * p + 4) * row) for p in range(4)]
    assert sc.ranges() == [(w.scales.data_ptr() + (8 * p + 2) * 22016 * 2, w.scales.data_ptr() + (8 * p + 4) * 22016 * 2)
                           for p in range(4)]  # fmt: skip
    assert z.nbytes() == w.qzeros.nbytes // 4
    assert q.nbytes() == w.qweight.nbytes // 4
    for d in ds:
        assert d.chunk % 16 == 0 and d.length % 16 == 0 and d.addr % 16 == 0 and d.stride % 16 == 0
        assert d.chunk <= d.length


def test_gemv_descs_clip_the_short_last_program_and_whole_weight() -> None:
    w = _weight(11008, 4096)  # 86 tiles, split 22: 4 a program, the last one 2
    iters, split = split_iters(86, 22)
    assert (iters, split) == (4, 22)
    q = L.gemv_descs(w, split, iters, 128, 0.5, 1.0)[0]
    end = w.qweight.data_ptr() + w.qweight.nbytes
    assert all(b <= end for _, b in q.ranges()) and len(q.ranges()) == 21  # the last program has no tiles 2..3
    whole = L.gemv_descs(w, split, iters, 128, 0.0, 1.0)
    assert sum(d.nbytes() for d in whole) == sum(t.nbytes for t in (w.qweight, w.scales, w.qzeros))
    assert L.gemv_descs(w, split, iters, 128, 0.5, 0.5) == []
    # a group spanning several tiles of a program whose range is not whole groups: all scales / zeros
    w64 = _weight(4096, 4096, g=128)
    it, sp = split_iters(4096 // 64, 16)  # 4 tiles of 64 = 2 groups a program
    d = L.gemv_descs(w64, sp, it, 64, 0.0, 0.5)
    assert d[0].nbytes() == w64.qweight.nbytes // 2 and d[1].nbytes() == w64.scales.nbytes // 2


def test_chunks_issue_every_byte_once() -> None:
    """The kernel's chunk arithmetic (l2_prefetch._desc) replayed in Python: every byte of the ranges, no other."""
    w = _weight(4096, 12288)
    for lo, hi, chunk in ((0.0, 0.25, 16384), (0.25, 1.0, 5000), (0.0, 1.0, 1 << 20)):
        for d in L.gemv_descs(w, 8, 4, 128, lo, hi, chunk):
            cpr = -(-d.length // d.chunk)
            got = []
            for j in range(d.count * cpr):
                i, kk = divmod(j, cpr)
                a = d.addr + i * d.stride + kk * d.chunk
                n = min(d.length - kk * d.chunk, d.chunk, d.end - a)
                if n > 0:
                    got.append((a, a + n))
            merged = []
            for a, b in sorted(got):
                if merged and merged[-1][1] == a:
                    merged[-1] = (merged[-1][0], b)
                else:
                    merged.append((a, b))
            assert merged == [r for r in d.ranges()] or sum(b - a for a, b in merged) == d.nbytes()


def test_args_and_parse() -> None:
    ds = L.gemv_descs(_weight(4096, 4096), 11, 3, 128, 0.0, 1.0)
    kw = L.args(ds, 2)
    assert kw["PF_ND"] == 3 and kw["PF_METHOD"] == 2 and kw["pf0a"] == ds[0].addr and kw["pf2d"] == ds[2].chunk
    assert kw["pf3a"] == 0 and len(kw) == 6 * L.MAX_DESC + 2
    assert L.args(ds, 0) == L.OFF and L.OFF["PF_METHOD"] == 0 and L.OFF["PF_ND"] == 0
    with pytest.raises(ValueError):
        L.args(ds * 3, 1)
    assert L.merge(ds, ds, ds)[:3] == ds and len(L.merge(ds, ds, ds)) == L.MAX_DESC
    s = L.parse("m2,o.5,agu.25,ngu.125,nq.25,np32,c8192")
    assert s == L.Setting(method=2, attn_o=0.5, attn_gu=0.25, norm_gu=0.125, norm_qkv=0.25, norm_progs=32, chunk=8192)
    assert L.parse("off") is None and L.parse("") is None and L.parse("on") == L.Setting()
    assert not L.Setting(method=0).on and L.Setting().on
    for bad in ("x1", "m7", "o2", "ngu", "np-1"):
        with pytest.raises(ValueError):
            L.parse(bad)


# ---- kernels with a plan: same outputs (interpreter: plumbing only; CUDA: the prefetches run) ----------------------

CASES = ("norm-res-fp16", "norm-nores-bf16", "row-rope-fp16")


def _plan_for(t: torch.Tensor, method: int) -> tuple[list, int]:
    """Descriptors over a live tensor (its bytes are what gets prefetched on CUDA)."""
    n = t.numel() * t.element_size()
    d = L.Desc(t.data_ptr(), n // 4 // 16 * 16, 4, n // 4 // 16 * 16, t.data_ptr() + n, 4096)
    return [d, L.Desc(t.data_ptr(), 0, 1, n // 16 * 16, t.data_ptr() + n, 1 << 20)], method


def run_case(case_id: str, device: str) -> dict[str, Any]:
    torch.manual_seed(zlib.crc32(case_id.encode()))
    try:
        return _run(case_id, device)
    except Exception as exc:  # reported per case by the test that owns it
        return dict(error=repr(exc))


def _run(case_id: str, dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels.fused_norm import add_rms_norm

    weights = torch.randn(1 << 16, device=dev)  # what the plans point at (never written)
    w0 = weights.clone()
    methods = (1, 2, 3)
    if case_id.startswith("norm"):
        dtype = torch.float16 if "fp16" in case_id else torch.bfloat16
        x = torch.randn(3, 96, device=dev).to(dtype)
        g = torch.randn(96, device=dev).to(dtype)
        res = torch.randn(3, 96, device=dev).to(dtype) if "nores" not in case_id else None
        r0 = res.clone() if res is not None else None
        ref = add_rms_norm(x, g, 1e-5, residual=r0)
        same = []
        for m in methods:
            r1 = res.clone() if res is not None else None
            plan, _ = _plan_for(weights, m)
            out = add_rms_norm(x, g, 1e-5, residual=r1, l2pf=(plan, m, 5))
            same.append(bool(torch.equal(out, ref)) and (r1 is None or bool(torch.equal(r1, r0))))
        return dict(same=all(same), weights_kept=bool(torch.equal(weights, w0)))
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from test_decode_row_rope import step_inputs  # type: ignore[import-not-found]

    heads, kvh, d = 4, 2, 16
    x = step_inputs([9, 0, 1, 23, 4], heads, kvh, d, 4, 40, torch.float16, dev)
    k0, v0 = x["k_cache"].clone(), x["v_cache"].clone()
    args = (x["qkv"], x["cos"], x["sin"], x["slots"])
    rest = (x["tables"], x["lens"], d**-0.5, heads)
    ref = row_rope_decode(*args, x["k_cache"], x["v_cache"], *rest, num_parts=4, block_n=4)
    kr, vr = x["k_cache"].clone(), x["v_cache"].clone()
    same = []
    for m in methods:
        kc, vc = k0.clone(), v0.clone()
        out = row_rope_decode(*args, kc, vc, *rest, num_parts=4, l2pf=_plan_for(weights, m), block_n=4)
        same.append(bool(torch.equal(out, ref) and torch.equal(kc, kr) and torch.equal(vc, vr)))
    return dict(same=all(same), weights_kept=bool(torch.equal(weights, w0)))


@pytest.fixture(scope="module")
def pf_case() -> Callable[[str], dict]:
    return case_runner(__file__, run_case, "l2_prefetch", 200)


@pytest.mark.parametrize("case_id", CASES)
def test_kernels_with_a_plan_give_the_same_outputs(case_id: str, pf_case: Callable[[str], dict]) -> None:
    res = pf_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["same"], "a prefetch plan must not change any output (it is only an L2 hint)"
    assert res["weights_kept"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_step_logits_identical_with_prefetch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """bench/engine's random int4 model (the 7B shape: the tuned GEMVs whose tiles the plans follow), batch 1, 512
    cached tokens, decode CUDA graphs: the logits with each method on match those with it off (to the split-K
    atomics' run-to-run spread: the prefetching kernels themselves are bit-identical, test above)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "engine"))
    from random_model import SHAPES, make_runner, write_config  # type: ignore[import-not-found]
    from steps import BLOCK, make_step  # type: ignore[import-not-found]

    runner = make_runner(write_config(SHAPES["7b"], tmp_path / "7b"), "int4", torch.device("cuda"), torch.float16,
                         64, BLOCK, 4, "triton", True)  # fmt: skip
    step = make_step(1, 1, 512, [-1], runner.config.vocab_size, runner.num_kv_blocks)
    saved, keep = L.SETTING, []
    kv0 = runner.kv_cache.clone()
    try:
        outs = {}
        for text in (
            "off",
            "m1,o1,agu.25,ngu.25,nq.25",
            "m2,o1,agu.5,ngu.5,nq.5",
            "m3,o.5,ngu.25,nq.25,np8",
            "m1,o0,agu.25,ae1",
        ):
            L.SETTING = L.parse(text)
            runner.kv_cache.copy_(kv0)
            outs[text] = runner.execute(step).clone()  # captures this setting's graph
            runner.kv_cache.copy_(kv0)
            outs[text + " replay"] = runner.execute(step).clone()
            keep.extend(runner._graphs._graphs.items())  # the next setting captures its own graph
            runner._graphs._graphs.clear()
        ref = outs["off"]
        assert torch.isfinite(ref).all()
        # split-K GEMVs add partials with atomics, so two runs of one graph differ in low bits: compare with that
        spread = float((outs["off replay"].float() - ref.float()).norm() / ref.float().norm())
        for k, o in outs.items():
            rel = float((o.float() - ref.float()).norm() / ref.float().norm())
            assert rel <= max(4 * spread, 1e-3), (k, rel, spread)
            assert torch.equal(o.argmax(-1), ref.argmax(-1)), k
    finally:
        L.SETTING = saved


@pytest.mark.parametrize("method", (1, 2, 3))
def test_offline_ptx_issues_prefetches_before_the_wait(monkeypatch: pytest.MonkeyPatch, method: int) -> None:
    """sm_90 build (offline, ptxas included) of add_rms_norm and row_rope_decode with a plan under PDL: the method's
    prefetch instruction is there (before the attention's griddepcontrol.wait), nothing else changes order."""
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from test_pdl_ptx_order import _ptx, _record  # type: ignore[import-not-found]

    h = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    big = torch.zeros(1 << 20, dtype=torch.int32)
    plan = L.gemv_descs(_weight(512, 4096), 2, 2, 128, 0.0, 1.0)
    plan = [L.Desc(big.data_ptr() + (d.addr % 4096) // 16 * 16, d.stride, d.count, d.length, big.data_ptr() + big.nbytes,
                   d.chunk) for d in plan]  # fmt: skip
    heads, kvh, d, bs = 4, 2, 32, 4
    kc, vc = h(16, bs, kvh, d), h(16, bs, kvh, d)
    tables = torch.arange(15, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], dtype=torch.int32)
    seen = _record(monkeypatch, lambda: add_rms_norm(h(3, 256), h(256), 1e-5, residual=h(3, 256),
                                                     l2pf=(plan, method, 4)))  # fmt: skip
    seen += _record(monkeypatch, lambda: row_rope_decode(h(3, (heads + 2 * kvh) * d), h(3, d), h(3, d),
                                                         torch.tensor([5, -1, 17]), kc, vc, tables, lens, d**-0.5,
                                                         heads, num_parts=4, l2pf=(plan, method)))  # fmt: skip
    assert [fn.__name__ for fn, _, _ in seen] == ["_add_rms_norm_kernel", "_row_kernel"]
    want = "prefetch.global.L2::evict_last" if method == 3 else "cp.async.bulk.prefetch.L2.global"
    for fn, args, kwargs in seen:
        assert kwargs["PF_METHOD"] == method and kwargs["PF_ND"] == len(plan)
        try:
            ptx, _ = _ptx(fn, args, dict(kwargs))
        except Exception as exc:  # noqa: BLE001 - no sm_90 toolchain here
            pytest.skip(f"offline sm_90 build unavailable: {exc!r}"[:300])
        body = ptx[ptx.index(".entry") :]
        assert want in body, fn.__name__
        assert ("L2::cache_hint" in body) == (method == 2)
        if fn.__name__ == "_row_kernel":  # issued before the wait; with PF_END after it (after the KV loop)
            assert body.index(want) < body.index("griddepcontrol.wait"), fn.__name__
            end, _ = _ptx(fn, args, {**kwargs, "PF_END": 1})
            end = end[end.index(".entry") :]
            assert end.index("griddepcontrol.wait") < end.index(want)
        off, _ = _ptx(fn, args, {**kwargs, **L.OFF})
        assert "prefetch" not in off[off.index(".entry") :], "no plan: no prefetch instruction"


if __name__ == "__main__":
    main(list(CASES), run_case)
