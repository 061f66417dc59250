"""paged_decode's impl "row" (kernels.decode_row) matches the torch reference: the small cases in-process on CUDA,
else in one subprocess under Triton's interpreter (decode_row_cases.py); on a GPU also the 7B / GQA shapes at the
engine's partition counts and the PDL ordering (the new token read only after the wait); and its dispatch rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from decode_row_cases import ROW_CASES, check_launch_hygiene, run_case
from hgemv_variants import case_runner
from inlaid_worker.kernels.pdl import gdc_enter
from pdl_decode_order import new_token_errors

HERE = Path(__file__).resolve().parent
WORKERS = HERE.parents[1]
_GPU = torch.cuda.is_available()
# (dtype, heads, KV heads, batch): 7B MHA and a GQA layout, fp16 and bf16, batch 1 and 4
_REAL = [(torch.float16, 32, 32, 1), (torch.bfloat16, 32, 8, 1), (torch.float16, 32, 8, 4), (torch.bfloat16, 32, 32, 4)]


@pytest.fixture(scope="module")
def row_case() -> Callable[[str], dict]:
    return case_runner(str(HERE / "decode_row_cases.py"), run_case, "decode_row", 300)


@pytest.mark.parametrize("case_id", list(ROW_CASES))
def test_row_decode_matches_reference(case_id: str, row_case: Callable[[str], dict]) -> None:
    res = row_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["err"] < (2e-3 if ROW_CASES[case_id]["dtype"] == "fp16" else 1e-5), res
    check_launch_hygiene(res)


def test_row_is_the_default_only_where_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.kernels import decode_row
    from inlaid_worker.kernels import paged_decode as pd

    cpu = torch.device("cpu")
    monkeypatch.delenv("INLAID_DECODE_ROW", raising=False)
    monkeypatch.setattr(pd, "ROW", None)
    assert pd.row_for(1, cpu) is None, "never by default off CUDA"
    monkeypatch.setattr(pd, "ROW", 1)
    assert pd.row_for(64, cpu) == {}
    monkeypatch.setenv("INLAID_DECODE_ROW", "0")
    assert pd.row_for(1, cpu) is None, "the env overrides the module switch"
    monkeypatch.setenv("INLAID_DECODE_ROW", "1")
    monkeypatch.setattr(pd, "ROW", 0)
    assert pd.row_for(1, cpu) == {}
    for name, table in pd.ROW_TABLE.items():  # only option names decode_row knows, at power-of-two buckets
        assert all(b & (b - 1) == 0 and set(o) <= set(decode_row.ROW_DEFAULTS) for b, o in table.items()), name
    # the H200 partition rule: ~8 programs an SM at batch 1 / 2 / 4 with 32 KV heads
    assert [decode_row.row_parts(b, 32, 132, 8) for b in (1, 2, 4, 8, 64)] == [32, 16, 8, 4, 1]
    monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", "block_n=32,bogus=1")
    with pytest.raises(ValueError, match="INLAID_DECODE_ROW_OPTS"):
        decode_row.row_env()
    monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", "block_n=32,num_warps=2")
    assert decode_row.row_env() == dict(block_n=32, num_warps=2)


@pytest.mark.skipif(not _GPU, reason="real shapes need a GPU")
@pytest.mark.parametrize("dtype,heads,kv_heads,batch", _REAL)
def test_row_decode_real_shapes(dtype: torch.dtype, heads: int, kv_heads: int, batch: int) -> None:
    """7B (32 x 128, MHA) and a GQA layout, block 16, batch 1 at 512 tokens and batch 4 at 2048 / 0 (padding) / 17 /
    511, at the
    engine's partition count and the default tile; also 8-token tiles without lookahead; and, where the device's
    ROW_TABLE makes "row" the default at this batch, paged_decode without an impl runs exactly that."""
    from inlaid_worker.kernels import paged_decode as pd
    from inlaid_worker.kernels.paged_decode import paged_decode, paged_decode_reference

    torch.manual_seed(batch)
    d, bs = 128, 16
    lens = torch.tensor([2048, 0, 17, 511] if batch == 4 else [512], dtype=torch.int32, device="cuda")
    per = 2048 // bs
    pool = batch * per
    k_cache = torch.randn(pool, bs, kv_heads, d, device="cuda").to(dtype)
    v_cache = torch.randn(pool, bs, kv_heads, d, device="cuda").to(dtype)
    tables = torch.randperm(pool, device="cuda").reshape(batch, per).to(torch.int32)
    q = torch.randn(batch, heads, d, device="cuda").to(dtype)
    ref = paged_decode_reference(q, k_cache, v_cache, tables, lens, d**-0.5).float()
    outs = {}
    for name, opts in (("default", {}), ("tile8-no-lookahead", dict(block_n=8, lookahead=0))):
        outs[name] = paged_decode(q, k_cache, v_cache, tables, lens, d**-0.5, impl="row", **opts)
        err = float((outs[name].float() - ref).norm() / ref.norm())
        assert err < 1e-2, (opts, err)
        if batch == 4:
            assert bool((outs[name][1] == 0).all())
    table = pd.row_for(batch, q.device)
    if table is not None:  # where the device's table makes "row" the default: what the engine's graphs run
        plain = paged_decode(q, k_cache, v_cache, tables, lens, d**-0.5, num_parts=32)  # the tiles' count, ignored
        assert torch.equal(plain, paged_decode(q, k_cache, v_cache, tables, lens, d**-0.5, impl="row", **table))


@triton.jit
def _spin(x_ptr, n, USE_GDC: tl.constexpr = 0):
    """One program that spins (so the attention PDL launches after it starts first) and lets dependents launch at
    once (kernels.pdl mode 1)."""
    gdc_enter(USE_GDC)
    acc = tl.load(x_ptr)
    for _ in range(n):
        acc = acc * 1.0000001 + 1e-7
    tl.store(x_ptr, acc)


@pytest.mark.skipif(not _GPU or torch.cuda.get_device_capability()[0] < 9, reason="PDL needs compute capability 9+")
def test_row_reads_the_new_token_after_the_pdl_wait() -> None:
    """In a PDL graph (a spin kernel, rope_cache writing the new K/V, then impl "row"), the new slots are clobbered
    before the replay: the shipped kernel (prefetch 1) must match the reference; the control (prefetch 2, which
    also loads the new token before the wait) must not, which shows the attention really started early."""
    errs = new_token_errors(_spin, {prefetch: dict(impl="row", prefetch=prefetch) for prefetch in (1, 2)})
    assert errs[1] < 2e-3, errs
    assert errs[2] > 0.05, f"control: the early load of the new token went unnoticed {errs}"


@pytest.mark.parametrize("prefetch", [1, 0])
def test_row_reads_only_step_metadata_and_the_cache_before_the_wait(monkeypatch: pytest.MonkeyPatch,
                                                                     prefetch: int) -> None:  # fmt: skip
    """The sm_90 PTX of the PDL launch (built offline): before griddepcontrol.wait only the staged lengths (every
    program: an empty partition exits there, a path to ret without a wait), the first tile's block-table entry and,
    with prefetch, the K / V cache (the first tile's older rows) are loaded; never q (rope_cache's output) and never
    a store. Without prefetch, no cache row either (the control)."""
    from inlaid_worker.kernels.paged_decode import paged_decode
    from pdl_ptx_order import analyze
    from test_pdl_ptx_order import _ptx, _record

    h = lambda *s: torch.zeros(*s, dtype=torch.float16)  # noqa: E731
    heads, kvh, d, bs = 4, 4, 32, 16
    kc, vc = h(16, bs, kvh, d), h(16, bs, kvh, d)
    tables = torch.arange(15, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], dtype=torch.int32)
    seen = _record(monkeypatch, lambda: paged_decode(h(3, heads, d), kc, vc, tables, lens, d**-0.5, 4, impl="row",
                                                     prefetch=prefetch))  # fmt: skip
    assert [fn.__name__ for fn, _, _ in seen] == ["_row_kernel"]
    fn, args, kwargs = seen[0]
    assert kwargs["USE_GDC"] == 1 and kwargs["PREFETCH"] == prefetch
    ptx, names = _ptx(fn, args, dict(kwargs))
    rep = analyze(ptx)
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names) and names[i].endswith("_ptr")}
    assert rep.waits >= 1 and not rep.early_writes and rep.ret_unwaited, rep
    assert early == ({"ctx_ptr", "bt_ptr", "k_ptr", "v_ptr"} if prefetch else {"ctx_ptr", "bt_ptr"}), early


@pytest.mark.parametrize("value", ["garbage", "tiles", "2"])
def test_row_switch_refuses_unknown_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A typo in INLAID_DECODE_ROW must not turn "row" on at every bucket (review): a ValueError naming it."""
    from inlaid_worker.kernels import paged_decode as pd

    monkeypatch.setenv("INLAID_DECODE_ROW", value)
    with pytest.raises(ValueError, match="INLAID_DECODE_ROW"):
        pd.row_for(1, torch.device("cpu"))
    monkeypatch.setenv("INLAID_DECODE_ROW", "off")
    assert pd.row_for(1, torch.device("cpu")) is None
    monkeypatch.setenv("INLAID_DECODE_ROW", "1")
    assert pd.row_for(1, torch.device("cpu")) == {}


@pytest.mark.parametrize("opts", ["prefetch=2", "lookahead=9", "rope=3", "block_n=24", "num_warps=3", "parts=3"])
def test_row_env_options_are_range_checked(monkeypatch: pytest.MonkeyPatch, opts: str) -> None:
    """prefetch=2 is the tests' PDL-order control (the new row before the wait): never reachable from the env."""
    from inlaid_worker.kernels import decode_row

    monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", opts)
    with pytest.raises(ValueError, match=opts.split("=")[0]):
        decode_row.row_options()
    monkeypatch.setenv("INLAID_DECODE_ROW_OPTS", "block_n=32,num_warps=2,prefetch=0,rope=1")
    assert decode_row.row_options()["block_n"] == 32 and decode_row.row_options()["rope"] == 1
