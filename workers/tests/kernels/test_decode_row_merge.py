"""decode_row's merge option (row option "merge": 1 = _merge_cg, every partial loaded at once with .cg loads; 0 = the
volatile chunked merge) at many partitions: the output matches paged_decode_reference and merge 0's to fp32
reassociation, with the partition workspace NaN-filled (a partial the merge reads but no partition wrote shows), the
counters left at 0 and a second launch giving the same output. Plain ("row") and rotary (row_rope_decode, with and
without fp32 sums) launches; REP 1, 2, 3; one load of all 32 partials (the 7B shape's path) and the chunked path
(D_PAD 256 at one warp: 16 partials a chunk). Small cases in-process on CUDA, else in one subprocess under Triton's
interpreter (this file run as a script prints one JSON line)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from decode_row_cases import DTYPES, check_launch_hygiene
from fused_cases import _nan_workspace, _rel
from hgemv_variants import case_runner, main, seeded_cases

HERE = Path(__file__).resolve().parent
# block_n 1 with rows of 9, 0, 1, 23 and 4 tokens: up to 23 busy partitions of 32 (the rest unwritten NaN rows)
MERGE_CASES: dict[str, dict[str, Any]] = {
    "mha-fp32-32parts": dict(dtype="fp32", heads=2, kv_heads=2, d=16, parts=32, rope=0, sums=0),
    "gqa2-fp16-32parts": dict(dtype="fp16", heads=4, kv_heads=2, d=16, parts=32, rope=0, sums=0),
    "gqa3-fp32-32parts-chunked": dict(dtype="fp32", heads=3, kv_heads=1, d=160, parts=32, rope=0, sums=0),
    "rope-gqa2-fp16-32parts": dict(dtype="fp16", heads=4, kv_heads=2, d=16, parts=32, rope=1, sums=0),
    "rope-sums-mha-fp16-32parts": dict(dtype="fp16", heads=2, kv_heads=2, d=16, parts=32, rope=1, sums=1),
}


def run_merge(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels import decode_fused
    from inlaid_worker.kernels import paged_decode as pd_mod
    from inlaid_worker.kernels.decode_row import row_rope_decode, row_rope_reference
    from test_decode_row_rope import step_inputs

    dtype, heads, d, lens = DTYPES[p["dtype"]], p["heads"], p["d"], [9, 0, 1, 23, 4]
    outs = {}
    if p["rope"]:
        x = step_inputs(lens, heads, p["kv_heads"], d, 4, 40, dtype, dev)
        rest = (x["tables"], x["lens"], d**-0.5, heads)
        ref_k, ref_v = x["k_cache"].clone(), x["v_cache"].clone()
        ref = row_rope_reference(x["qkv"], x["cos"], x["sin"], x["slots"], ref_k, ref_v, *rest)
        qkv = x["qkv"].float() if p["sums"] else x["qkv"]

        def launch(merge: int) -> torch.Tensor:
            k, v = x["k_cache"].clone(), x["v_cache"].clone()
            return row_rope_decode(qkv, x["cos"], x["sin"], x["slots"], k, v, *rest, num_parts=p["parts"],
                                   sums=bool(p["sums"]), block_n=1, merge=merge)  # fmt: skip
    else:
        bs, blocks = 4, 24
        k_cache = torch.randn(blocks, bs, p["kv_heads"], d, device=dev).to(dtype)
        v_cache = torch.randn(blocks, bs, p["kv_heads"], d, device=dev).to(dtype)
        ctx = torch.tensor(lens, dtype=torch.int32, device=dev)
        tables = torch.stack([torch.randperm(blocks)[:6] for _ in lens]).to(dev, torch.int32)
        q = torch.randn(len(lens), heads, d, device=dev).to(dtype)
        ref = pd_mod.paged_decode_reference(q, k_cache, v_cache, tables, ctx, d**-0.5)

        def launch(merge: int) -> torch.Tensor:
            return pd_mod.paged_decode(q, k_cache, v_cache, tables, ctx, d**-0.5, num_parts=p["parts"], impl="row",
                                       block_n=1, merge=merge)  # fmt: skip

    plain, pd_mod.workspace = pd_mod.workspace, _nan_workspace
    try:
        for merge in (0, 1, 1):
            outs.setdefault(merge, []).append(launch(merge))
    finally:
        pd_mod.workspace = plain
    new, old = outs[1][0], outs[0][0]
    cnt = decode_fused._COUNTERS.get(new.device)
    return dict(err=_rel(new, ref), err_old=_rel(old, ref), vs_old=float((new.float() - old.float()).abs().max()),
                finite=bool(torch.isfinite(new).all()), pad_row_zero=bool((new[1] == 0).all()),
                rerun_same=bool(torch.equal(new, outs[1][1])), counters_clean=cnt is None or bool((cnt == 0).all()))  # fmt: skip


run_case = seeded_cases(MERGE_CASES, run_merge)


@pytest.fixture(scope="module")
def merge_case() -> Callable[[str], dict]:
    return case_runner(__file__, run_case, "row_merge", 300)


@pytest.mark.parametrize("case_id", list(MERGE_CASES))
def test_row_merge_matches_reference(case_id: str, merge_case: Callable[[str], dict]) -> None:
    res = merge_case(case_id)
    p = MERGE_CASES[case_id]
    assert "error" not in res, res.get("error")
    tol = 1e-5 if p["dtype"] == "fp32" else 2e-3 if not p["rope"] else 1e-2
    assert res["finite"] and res["err"] < tol, res
    # merge 0 and 1 differ only by fp32 reassociation: an ulp or two of the output dtype at these magnitudes (|out| <
    # 8: 16 ulps of 1.0 bound it; measured 0 to 1.2e-7)
    assert res["vs_old"] <= (1e-5 if p["dtype"] == "fp32" else 2 * torch.finfo(DTYPES[p["dtype"]]).eps * 8), res
    check_launch_hygiene(res)


def test_merge_option_is_range_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.kernels import decode_row

    monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", "merge=2")
    with pytest.raises(ValueError, match="merge"):
        decode_row.row_options()
    for v in (0, 1):
        monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", f"merge={v}")
        assert decode_row.row_options()["merge"] == v


if __name__ == "__main__":
    main(list(MERGE_CASES), run_case)


def _merge_order_problems(ptx: str) -> list[str]:
    """What breaks the merge's ordering in a _row_kernel PTX (empty: none): exactly one atomic, gpu-scope acq_rel (the
    arrival); a CTA barrier between the last partial store and it; every .cg merge load after it, behind a barrier
    (the broadcast of its result)."""
    import re

    ins = [ln.split("//")[0].strip() for ln in ptx.splitlines()]
    ins = [ln for ln in ins if ln and not ln.startswith(".")]
    atoms = [i for i, ln in enumerate(ins) if re.search(r"\batom\.", ln)]
    if len(atoms) != 1:
        return [f"{len(atoms)} atomics"]
    a, probs = atoms[0], []
    if "atom.global.gpu.acq_rel" not in ins[a]:
        probs.append("the arrival is not a gpu-scope acq_rel atomic: " + ins[a])
    stores = [i for i in range(a) if re.search(r"\bst\.global", ins[i])]
    if not stores or not any(ins[i].startswith(("bar.sync", "barrier.sync")) for i in range(stores[-1], a)):
        probs.append("no CTA barrier between the partial stores and the arrival")
    loads = [i for i, ln in enumerate(ins) if "ld.global.cg" in ln]
    if not loads or min(loads) < a:
        probs.append("a .cg merge load before the arrival (or none)")
    elif not any(ins[i].startswith(("bar.sync", "barrier.sync")) for i in range(a, min(loads))):
        probs.append("no CTA barrier between the arrival and the merge loads")
    return probs


@pytest.mark.parametrize(("d", "chunked"), [(32, False), (256, True)])
def test_merge_loads_come_after_the_arrival(monkeypatch: pytest.MonkeyPatch, d: int, chunked: bool) -> None:
    """The sm_90 PTX (built offline) of a 32-partition launch with merge 1 keeps the ordering the merge relies on
    (_merge_order_problems; a relaxed atomic or a missing barrier fails it), with all 32 partials loaded at once where
    they fit (head dim 32) and in chunks where not (256: 16 a chunk)."""
    from inlaid_worker.kernels.paged_decode import paged_decode
    from test_pdl_ptx_order import _ptx, _record

    h = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    heads, kvh, bs = 4, 4, 16
    kc, vc = h(16, bs, kvh, d), h(16, bs, kvh, d)
    tables = torch.arange(15, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], dtype=torch.int32)
    seen = _record(monkeypatch, lambda: paged_decode(h(3, heads, d), kc, vc, tables, lens, d**-0.5, 32, impl="row"))
    assert [fn.__name__ for fn, _, _ in seen] == ["_row_kernel"]
    fn, args, kwargs = seen[0]
    assert kwargs["MERGE"] == 1 and kwargs["NUM_PARTS"] == 32
    assert kwargs["MERGE_CHUNK"] == (16 if chunked else 32), kwargs["MERGE_CHUNK"]
    ptx, _ = _ptx(fn, args, dict(kwargs))
    assert _merge_order_problems(ptx) == []
    assert _merge_order_problems(ptx.replace("atom.global.gpu.acq_rel", "atom.global.gpu.relaxed"))  # the check bites
