"""quant_tcv (session 11: small-M Gluon tensor-core GEMV, kinds tcv / tcv2): the column order, the one-shift
dequantization and the pure-torch model on the CPU, the dispatch under Triton's interpreter (quant_tc's "tc", the
same product), the candidates; the kernel itself against the dequantized fp32 product on CUDA (sm_90; skipped
elsewhere: Gluon wgmma kernels do not run under the interpreter)."""

from __future__ import annotations

import pytest
import torch
from cases import ON_SM90, make_gptq
from gptq_weight import gptq_weight
from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
from inlaid_worker.kernels.quant_matmul import dequantize_gptq
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, candidate_configs

TCV = {"tcv", "tcv2"}


def _tcv():
    from inlaid_worker.kernels import quant_tcv  # Gluon import: fine on the CPU, nothing is launched

    return quant_tcv


@pytest.mark.parametrize(("block_n", "warps"), [(64, 4), (128, 4), (64, 2)])
def test_row_columns_give_a_thread_adjacent_columns(block_n: int, warps: int) -> None:
    q = _tcv()
    cols = q.row_columns(block_n, warps)
    assert sorted(cols.tolist()) == list(range(block_n)), "a permutation of the tile's columns"
    rr = q.rows_per_thread(block_n, warps)
    for lane_g in range(8):
        for w in range(warps):
            # the rows of lane group g in warp w: g + 8 j + 16 w + 16 W h
            rows = [lane_g + 8 * j + 16 * w + 16 * warps * h for h in range(block_n // (16 * warps)) for j in (0, 1)]
            got = sorted(cols[rows].tolist())
            assert got == list(range(got[0], got[0] + rr)) and got[0] % rr == 0, "R adjacent, aligned columns"


def test_one_shift_dequantization_is_exact_in_fp16() -> None:
    q = torch.arange(16).repeat_interleave(17)
    z = torch.arange(17).repeat(16)  # stored zero + offset: 0..16
    lo, hi = _tcv().dequant_pairs_reference(q, z, torch.float16)
    assert torch.equal(lo.float(), (q - z).float()) and torch.equal(hi.float(), (q - z).float())
    # the bit patterns the LOP3s build: 0x6400 | q and 0x6400 | (q << 4) are the fp16 values 1024 + q, 1024 + 16 q
    bits = torch.tensor([0x6400 | int(v) for v in q] + [0x6400 | (int(v) << 4) for v in q], dtype=torch.int16)
    assert torch.equal(bits.view(torch.float16).float(), torch.cat([1024 + q, 1024 + 16 * q]).float())


def test_bf16_keeps_the_three_shift_operand() -> None:
    """bf16 has 7 mantissa bits: bits 4..7 of a 16-bit lane reach its exponent, so the 0x00f0 nibble cannot be read
    as MAGIC + 16 q (the kernel uses quant_tcg's operand for bf16)."""
    bits = torch.tensor([0x4300 | (15 << 4)], dtype=torch.int16)
    assert float(bits.view(torch.bfloat16)) != 128.0 + 16 * 15


@pytest.mark.parametrize(("sym", "act"), [(False, False), (True, False), (False, True)])
def test_reference_model_equals_the_dequantized_product(sym: bool, act: bool) -> None:
    torch.manual_seed(1)
    k, n = 384, 256
    raw = make_gptq(k, n, 4, 128, sym=sym, act=act, zero_offset=1)
    ref_w = dequantize_gptq(raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, 1).float()
    w = prepare_gptq_weight(**raw, bits=4, group_size=128, sym=sym)
    x = torch.randn(5, k)
    for block_n in (64, 128):
        y = _tcv().tcv_reference(x, w, block_n, 4)
        ref = x @ ref_w
        assert float((y - ref).norm() / ref.norm()) < 1e-5


def test_candidates_cover_m2_to_8_within_shared_memory() -> None:
    q = _tcv()
    for m in (2, 3, 4, 8):
        for n, k in ((4096, 11008), (11008, 4096), (22016, 4096)):
            cands = [c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind in TCV]
            assert cands, (m, n, k)
            for c in cands:
                assert c.block_m == 8 and n % c.block_n == 0
                assert q.tcv_supported(_FakeW(), n, k, c.block_n, c.block_m, c.split_k, c.num_stages), c
    assert not [c for c in candidate_configs(1, 4096, 4096, 128, 4) if c.kind in TCV], "M = 1 stays with hgemvr"
    assert not [c for c in candidate_configs(16, 4096, 4096, 128, 4) if c.kind in TCV], "lost every M = 16 point"
    assert not [c for c in candidate_configs(8, 4100, 4096, 128, 4) if c.kind in TCV], "N % 64 != 0"
    assert not [c for c in candidate_configs(8, 4096, 4096, 128, 3) if c.kind in TCV], "4-bit only"


class _FakeW:
    bits = 4
    group_size = 128


def test_dispatch_under_the_interpreter_matches_the_reference() -> None:
    """On the CPU the kinds run quant_tc's "tc" (the same exact-operand product): the dispatcher's path."""
    import pdl_helpers as ph  # type: ignore[import-not-found]

    ph.interpreted_dispatch_matches_reference(("tcv", "tcv2"), (8, 64, 128, 2, 4, 2), act=False)


@pytest.mark.skipif(not ON_SM90, reason="Gluon wgmma kernel: CUDA sm_90 only (the CPU twin is quant_tc, kind tc)")
@pytest.mark.parametrize(
    ("kind", "bn", "depth", "m", "split", "sym", "act", "dtype"),
    [
        ("tcv", 128, 2, 2, 1, False, False, torch.float16),
        ("tcv", 128, 2, 8, 3, False, False, torch.float16),  # odd tiles a program: the zero x tile of a pair
        ("tcv2", 128, 2, 4, 2, False, False, torch.float16),
        ("tcv", 64, 2, 16, 4, True, False, torch.float16),
        ("tcv", 64, 1, 5, 2, False, True, torch.float16),  # act-order, masked rows, depth 1
        ("tcv2", 128, 2, 16, 1, False, True, torch.bfloat16),
        ("tcv", 128, 1, 3, 5, False, False, torch.bfloat16),  # a short last split (7 tiles / 5)
        ("tcv", 64, 4, 8, 1, False, False, torch.float16),  # the per-thread cp.async ring
        ("tcv", 128, 4, 16, 2, False, True, torch.float16),
        ("tcv2", 128, 4, 4, 3, True, False, torch.float16),
        ("tcv", 64, 6, 2, 2, False, False, torch.bfloat16),
        ("tcv", 128, 3, 8, 1, False, False, torch.float16),  # three register sets
    ],
)
def test_tcv_matches_reference(kind: str, bn: int, depth: int, m: int, split: int, sym: bool, act: bool,
                               dtype: torch.dtype) -> None:  # fmt: skip
    from inlaid_worker.kernels import pdl, quant_common
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    torch.manual_seed(0)
    k, n = 896, 384  # 7 K tiles
    w, ref_w = gptq_weight(k, n, sym, act, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = x.float() @ ref_w
    model = _tcv().tcv_reference(x, w, bn, 4)
    cfg = QMMConfig(max(8, m), bn, 128, split, 4, depth, True, kind)
    for use_pdl in (False, True):
        y = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
        if use_pdl:
            with pdl.scope(1):
                launch_quant_matmul(x, w, cfg, y)
        else:
            launch_quant_matmul(x, w, cfg, y)
        torch.cuda.synchronize()
        err = float((y.float() - ref).norm() / ref.norm())
        assert err < (5e-3 if dtype == torch.bfloat16 else 1e-3), f"rel err {err:.2e} (pdl {use_pdl})"
        assert float((y.float() - model).norm() / model.norm()) < (5e-3 if dtype == torch.bfloat16 else 1e-3)
        for ws, cnt in quant_common._WORKSPACES.values():
            assert bool((ws == 0).all()) and bool((cnt == 0).all()), "split-K workspace left clean"
