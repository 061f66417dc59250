"""decode_row.row_rope_decode (rotary and the new token's K/V write inside paged_decode's impl "row") matches its torch
reference and the two launches it replaces (rope_cache + "row"): small cases in-process on CUDA, else in one
subprocess under Triton's interpreter (this file run as a script prints one JSON line); on a GPU also the 7B / GQA
shapes and the PDL ordering; offline, the PTX order before griddepcontrol.wait; and the llama_fast dispatch rule.

Every small case: rows of 9, 0 (padding, slot -1), 1, 23 and 4 tokens over blocks of 4; the new tokens' cache slots
hold 30 before the launch (the kernel must not read them: it attends to the new token from registers), the partition
workspace is NaN-filled, the counters must be left at 0, a second launch must give the same output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from decode_row_cases import DTYPES, check_launch_hygiene
from fused_cases import _nan_workspace, _rel
from hgemv_variants import case_runner, main, seeded_cases
from inlaid_worker.model.llama_fast import attention_fusion

HERE = Path(__file__).resolve().parent
WORKERS = HERE.parents[1]
_GPU = torch.cuda.is_available()
# tiles inside one block (4, 2, 1) and across blocks (8); 1-16 partitions; lookahead 0 / 1; prefetch 0 / 1; GQA
ROPE_CASES: dict[str, dict[str, Any]] = {
    "mha-fp16-4parts-tile4": dict(dtype="fp16", heads=2, kv_heads=2, d=32, parts=4, opts=dict(block_n=4, lookahead=1)),
    "mha-fp32-2parts-tile8-d24": dict(dtype="fp32", heads=3, kv_heads=3, d=24, parts=2, opts=dict(block_n=8)),
    "gqa-bf16-8parts-tile2": dict(dtype="bf16", heads=4, kv_heads=2, d=16, parts=8, opts=dict(block_n=2, lookahead=1)),
    "gqa3-fp32-4parts-noprefetch": dict(dtype="fp32", heads=6, kv_heads=2, d=16, parts=4, opts=dict(prefetch=0)),
    "mha-fp16-1part": dict(dtype="fp16", heads=2, kv_heads=2, d=16, parts=1, opts=dict(lookahead=0)),
    "mha-fp32-16parts-tile1": dict(dtype="fp32", heads=1, kv_heads=1, d=16, parts=16, opts=dict(block_n=1)),
}


def _close(a: torch.Tensor, b: torch.Tensor, ulps: float = 2.0) -> bool:
    """Equal within `ulps` units of a's dtype at b's largest magnitude: the rotary products may be FMA-contracted
    (one product left unrounded) differently in each compiled kernel (ptxas / LLVM for sm_90 contract them in both
    rope_cache and here), so rope(k) agrees with rope_cache's and the torch reference's to about one ulp, not bits."""
    eps = torch.finfo(a.dtype).eps
    return bool(((a.double() - b.double()).abs().max() <= ulps * eps * b.double().abs().max()).item())


def step_inputs(lens: list[int], heads: int, kv_heads: int, d: int, bs: int, blocks: int, dtype: torch.dtype,
                dev: str) -> dict[str, Any]:  # fmt: skip
    """One decode step: caches, tables, lengths, each row's new-token slot (-1 on a row of context 0), qkv, cos/sin."""
    from inlaid_worker.model.rope import cos_sin

    per = max(-(-n // bs) for n in lens)
    k_cache = torch.randn(blocks, bs, kv_heads, d, device=dev).to(dtype)
    v_cache = torch.randn(blocks, bs, kv_heads, d, device=dev).to(dtype)
    tables = torch.randperm(blocks, device=dev)[: len(lens) * per].reshape(len(lens), per).to(torch.int32)
    ctx = torch.tensor(lens, dtype=torch.int32, device=dev)
    last = (ctx - 1).clamp_min(0).long()
    slots = tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs
    slots = torch.where(ctx > 0, slots, -1).to(torch.int32)
    qkv = torch.randn(len(lens), (heads + 2 * kv_heads) * d, device=dev).to(dtype)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d))
    cos, sin = cos_sin(inv_freq, last, dtype)
    return dict(k_cache=k_cache, v_cache=v_cache, tables=tables, lens=ctx, slots=slots, qkv=qkv, cos=cos[:, 0],
                sin=sin[:, 0])  # fmt: skip


def clobber_new_slots(x: dict[str, Any], value: float) -> None:
    live = x["slots"][x["slots"] >= 0].long()
    for cache in (x["k_cache"], x["v_cache"]):
        cache.view(-1, *cache.shape[2:])[live] = value


def run_rope(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels import decode_fused
    from inlaid_worker.kernels import paged_decode as pd_mod
    from inlaid_worker.kernels.decode_row import row_rope_decode, row_rope_reference
    from inlaid_worker.kernels.rope_cache import rope_and_cache

    dtype, heads, d = DTYPES[p["dtype"]], p["heads"], p["d"]
    x = step_inputs([9, 0, 1, 23, 4], heads, p["kv_heads"], d, 4, 40, dtype, dev)
    clobber_new_slots(x, 30.0)
    args = (x["qkv"], x["cos"], x["sin"], x["slots"])
    rest = (x["tables"], x["lens"], d**-0.5, heads)
    ref_k, ref_v = x["k_cache"].clone(), x["v_cache"].clone()
    ref = row_rope_reference(*args, ref_k, ref_v, *rest)
    # the two launches it replaces: rope_cache, then impl "row" (same options)
    two_k, two_v = x["k_cache"].clone(), x["v_cache"].clone()
    q = rope_and_cache(*args, two_k, two_v, heads)
    two = pd_mod.paged_decode(q, two_k, two_v, x["tables"], x["lens"], d**-0.5, num_parts=p["parts"], impl="row",
                              **p["opts"])  # fmt: skip
    plain, pd_mod.workspace = pd_mod.workspace, _nan_workspace
    try:
        out = row_rope_decode(*args, x["k_cache"], x["v_cache"], *rest, num_parts=p["parts"], **p["opts"])
        again = row_rope_decode(*args, x["k_cache"], x["v_cache"], *rest, num_parts=p["parts"], **p["opts"])
    finally:
        pd_mod.workspace = plain
    cnt = decode_fused._COUNTERS.get(x["k_cache"].device)
    return dict(err=_rel(out, ref), err_two=_rel(out, two), pad_row_zero=bool((out[1] == 0).all()),
                cache_same=bool(torch.equal(x["k_cache"], two_k) and torch.equal(x["v_cache"], two_v)),
                cache_close=_close(x["k_cache"], two_k) and _close(x["k_cache"], ref_k),
                v_same=bool(torch.equal(x["v_cache"], two_v)),
                rerun_same=bool(torch.equal(out, again)),
                counters_clean=cnt is None or bool((cnt == 0).all()))  # fmt: skip


run_case = seeded_cases(ROPE_CASES, run_rope)


@pytest.fixture(scope="module")
def rope_case() -> Callable[[str], dict]:
    return case_runner(__file__, run_case, "row_rope", 300)


@pytest.mark.parametrize("case_id", list(ROPE_CASES))
def test_row_rope_matches_reference(case_id: str, rope_case: Callable[[str], dict]) -> None:
    res = rope_case(case_id)
    assert "error" not in res, res.get("error")
    tol = 1e-5 if ROPE_CASES[case_id]["dtype"] == "fp32" else 1e-2
    assert res["err"] < tol and res["err_two"] < tol, res
    assert res["cache_close"] and res["v_same"], ("rope(k) must land at each row's slot as rope_cache writes it "
                                                  "(to rounding), v exactly", res)  # fmt: skip
    check_launch_hygiene(res)


def test_row_rope_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama_fast folds rotary into "row" only where "row" is paged_decode's default and its options say rope=1."""
    from inlaid_worker.kernels import paged_decode as pd

    cpu = torch.device("cpu")
    for var in ("INLAID_DECODE_ROW", "INLAID_DECODE_ATTN", "INLAID_DECODE_ROW_OPTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pd, "ROW", 1)
    assert pd.row_rope_for(3, 1, cpu) is None, "rope=0 unless asked"
    monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", "rope=1")
    assert pd.row_rope_for(3, 1, cpu) == {}
    monkeypatch.setattr(pd, "ROW", 0)
    assert pd.row_rope_for(3, 1, cpu) is None, "not where paged_decode's default is another kernel"
    monkeypatch.setenv("INLAID_DECODE_ATTN", "row")
    assert pd.row_rope_for(3, 1, cpu) == {} and pd.row_rope_for(3, 4, cpu) is None, "env row: MHA only, as paged_decode"
    monkeypatch.setenv("INLAID_DECODE_ATTN", "tiles")
    monkeypatch.setattr(pd, "ROW", 1)
    assert pd.row_rope_for(3, 1, cpu) is None, "a named kernel wins over the row switch, as in paged_decode"
    monkeypatch.delenv("INLAID_DECODE_ATTN")
    monkeypatch.setattr(pd, "ROW_TABLE", {"X": {4: dict(rope=1)}})
    monkeypatch.setattr(pd, "ROW", None)
    monkeypatch.delenv("INLAID_DECODE_ROW_OPTS")
    assert pd.row_rope_for(3, 1, cpu) is None, "no table off CUDA"


_FORWARD = """
import json, sys
from cases import _patch_interpreter_for_numpy
_patch_interpreter_for_numpy()
import decode_fusion_case
import inlaid_worker.model.llama_fast as lf
calls = []
plain = lf.row_rope_decode
lf.row_rope_decode = lambda *a, **k: calls.append(k.get("base")) or plain(*a, **k)
res = decode_fusion_case.run(sys.argv[1])
print(json.dumps(dict(res=res, calls=len(calls))))
"""


@pytest.mark.skipif(_GPU, reason="CPU: the interpreter (on a GPU the s11_attn step and the real-shape tests cover it)")
def test_forward_fast_takes_the_fused_row_rope(tmp_path: Path) -> None:
    """llama_fast's dispatch: with "row" on (INLAID_DECODE_ROW=1) and rope=1 in its options, a decode step of the
    tiny model (tests/model/decode_fusion_case.py, interpreted) runs row_rope_decode once a layer for the
    attention-unfused decode fusions and still matches the torch reference forward (hidden states and caches)."""
    sys.path.insert(0, str(HERE.parent))
    from factories import make_tiny_llama

    model = make_tiny_llama(tmp_path / "model")
    path = os.pathsep.join([str(WORKERS), str(HERE.parent), str(HERE), str(HERE.parent / "model")])
    env = dict(os.environ, PYTHONPATH=path, TRITON_INTERPRET="1", INLAID_DECODE_ROW="1",
               INLAID_DECODE_ROW_OPTS="rope=1")  # fmt: skip
    env.pop("INLAID_DECODE_ATTN", None)
    proc = subprocess.run([sys.executable, "-c", _FORWARD, str(model)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted forward failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    fused = [f for f in out["res"] if attention_fusion(f) == "none"]  # the fusions whose attention is "none"
    assert out["calls"] == layers * len(fused), out
    for fusion in fused:
        r = out["res"][fusion]
        assert r["finite"] == 1.0 and r["vs_reference"] < 1e-5 and r["cache_vs_reference"] < 1e-6, (fusion, r)


@pytest.mark.skipif(not _GPU, reason="real shapes need a GPU")
@pytest.mark.parametrize("dtype,heads,kv_heads,lens", [(torch.float16, 32, 32, [512]), (torch.bfloat16, 32, 8, [512]),
                                                       (torch.float16, 32, 32, [2048, 0, 17, 511]),
                                                       (torch.bfloat16, 32, 8, [2048, 0, 17, 1])])  # fmt: skip
def test_row_rope_real_shapes(dtype: torch.dtype, heads: int, kv_heads: int, lens: list[int]) -> None:
    """7B (32 x 128) and GQA 32/8, block 16, at the engine's partition count: the fused launch against rope_cache +
    "row" (the output within rounding, the caches equal) and the reference."""
    from inlaid_worker.kernels.decode_row import row_rope_decode, row_rope_reference
    from inlaid_worker.kernels.paged_decode import paged_decode
    from inlaid_worker.kernels.rope_cache import rope_and_cache

    torch.manual_seed(len(lens))
    d = 128
    x = step_inputs(lens, heads, kv_heads, d, 16, len(lens) * 128 + 8, dtype, "cuda")
    clobber_new_slots(x, 30.0)
    args = (x["qkv"], x["cos"], x["sin"], x["slots"])
    two_k, two_v = x["k_cache"].clone(), x["v_cache"].clone()
    ref_k, ref_v = x["k_cache"].clone(), x["v_cache"].clone()
    q = rope_and_cache(*args, two_k, two_v, heads)
    two = paged_decode(q, two_k, two_v, x["tables"], x["lens"], d**-0.5, impl="row").float()
    ref = row_rope_reference(*args, ref_k, ref_v, x["tables"], x["lens"], d**-0.5, heads).float()
    out = row_rope_decode(*args, x["k_cache"], x["v_cache"], x["tables"], x["lens"], d**-0.5, heads).float()
    assert _close(x["k_cache"], two_k) and _close(x["k_cache"], ref_k) and torch.equal(x["v_cache"], two_v)
    assert float((out - two).norm() / two.norm()) < (2e-3 if dtype == torch.float16 else 1.5e-2)
    assert float((out - ref).norm() / ref.norm()) < (2e-3 if dtype == torch.float16 else 1.5e-2)
    if 0 in lens:
        assert bool((out[lens.index(0)] == 0).all())


@pytest.mark.skipif(not _GPU or torch.cuda.get_device_capability()[0] < 9, reason="PDL needs compute capability 9+")
def test_row_rope_under_pdl() -> None:
    """A PDL graph (a spin kernel that lets dependents launch at once, then the fused launch): the new slots are
    clobbered before each replay; the output must match the reference and the slots must hold rope(k), v again."""
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.decode_row import row_rope_decode, row_rope_reference
    from pdl_decode_order import capture_under_pdl
    from test_decode_row import _spin

    torch.manual_seed(0)
    h, d = 8, 128
    x = step_inputs([5, 16, 17, 100, 0, 33], h, h, d, 16, 48, torch.float16, "cuda")
    args = (x["qkv"], x["cos"], x["sin"], x["slots"])
    ref_k, ref_v = x["k_cache"].clone(), x["v_cache"].clone()
    ref = row_rope_reference(*args, ref_k, ref_v, x["tables"], x["lens"], d**-0.5, h).float()
    spin = torch.zeros(1, device="cuda")

    def fn() -> torch.Tensor:
        _spin[(1,)](spin, 20000, **pdl.launch_kw())
        return row_rope_decode(*args, x["k_cache"], x["v_cache"], x["tables"], x["lens"], d**-0.5, h, num_parts=4)

    g, out = capture_under_pdl(fn)
    clobber_new_slots(x, 30.0)
    g.replay()
    torch.cuda.synchronize()
    assert float((out.float() - ref).norm() / ref.norm()) < 2e-3
    assert _close(x["k_cache"], ref_k) and torch.equal(x["v_cache"], ref_v)
    assert float((x["k_cache"].float() - 30.0).abs().min()) > 0, "every clobbered slot was written again"


def test_row_rope_reads_only_step_metadata_and_older_rows_before_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sm_90 PTX of the fused PDL launch (offline): before griddepcontrol.wait only the lengths, the first tile's
    block-table entry and the older K / V rows load; never qkv, cos / sin or the slots, and no store (the cache
    write comes after the wait)."""
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from pdl_ptx_order import analyze
    from test_pdl_ptx_order import _ptx, _record

    x = step_inputs([17, 3, 0], 4, 4, 32, 16, 16, torch.float16, "cpu")
    seen = _record(monkeypatch, lambda: row_rope_decode(x["qkv"], x["cos"], x["sin"], x["slots"], x["k_cache"],
                                                        x["v_cache"], x["tables"], x["lens"], 32**-0.5, 4,
                                                        num_parts=4))  # fmt: skip
    assert [fn.__name__ for fn, _, _ in seen] == ["_row_kernel"]
    fn, args, kwargs = seen[0]
    assert kwargs["USE_GDC"] == 1 and kwargs["ROPE"] == 1 and kwargs["PREFETCH"] == 1
    ptx, names = _ptx(fn, args, dict(kwargs))
    rep = analyze(ptx)
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names) and names[i].endswith("_ptr")}
    assert rep.waits >= 1 and not rep.early_writes and rep.ret_unwaited, rep
    assert early == {"ctx_ptr", "bt_ptr", "k_ptr", "v_ptr"}, early


if __name__ == "__main__":
    main(list(ROPE_CASES), run_case)
