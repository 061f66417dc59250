"""quant_matmul (Triton) vs the torch reference, plus the pure-torch GPTQ packing and load transform."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from autogptq_oracle import autogptq_pack
from cases import QMM_CASES, make_gptq
from inlaid_worker.kernels.gptq_packing import pack_bitstream, prepare_gptq_weight, to_k_major, unpack_bitstream
from inlaid_worker.kernels.quant_matmul import dequantize_gptq


@pytest.mark.parametrize("case_id", list(QMM_CASES))
def test_quant_matmul_matches_reference(case_id: str, kernel_case: Callable[[str], dict]) -> None:
    res = kernel_case(case_id)
    assert "error" not in res, res.get("error")
    tol = 1e-2 if QMM_CASES[case_id].get("dtype") == "bf16" else 2e-3
    assert res["err"] < tol, res
    # fp32 atomics may sum in another order; a dirty workspace would be off by O(|y|) ~ 1
    assert res["repeat_diff"] < 1e-3, "split-K workspace was not left clean"


def test_pack_3bit_matches_autogptq_layout() -> None:
    values = torch.randint(0, 8, (64, 5), dtype=torch.int32)
    oracle = torch.from_numpy(autogptq_pack(values.numpy().astype(np.uint32), 3).view(np.int32))  # AutoGPTQ's loop
    assert torch.equal(pack_bitstream(values, 3, dim=0), oracle)


def test_pack_4bit_is_low_nibble_first() -> None:
    values = torch.arange(8, dtype=torch.int32).view(8, 1)
    assert int(pack_bitstream(values, 4, dim=0)[0, 0]) == 0x76543210


@pytest.mark.parametrize("bits", [3, 4])
def test_unpack_inverts_pack_along_both_dims(bits: int) -> None:
    values = torch.randint(0, 2**bits, (64, 45), dtype=torch.int32)
    assert torch.equal(unpack_bitstream(pack_bitstream(values, bits, 0), bits, 64, 0), values)
    assert torch.equal(unpack_bitstream(pack_bitstream(values, bits, 1), bits, 45, 1), values)


@pytest.mark.parametrize("bits", [3, 4])
def test_act_order_transform_preserves_the_product(bits: int) -> None:
    raw = make_gptq(256, 32, bits, 64, sym=False, act=True, zero_offset=1)
    w = prepare_gptq_weight(**raw, bits=bits, group_size=64, sym=False)
    assert w.perm is not None
    sorted_groups = (torch.arange(256) // 64).int()
    w_sorted = dequantize_gptq(w.qweight, w.qzeros, w.scales, sorted_groups, bits, 1)
    w_raw = dequantize_gptq(raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], bits, 1)
    assert torch.equal(w_sorted, w_raw[w.perm.long()])


def test_sequential_g_idx_needs_no_permutation() -> None:
    raw = make_gptq(128, 16, 4, 32, sym=True, act=False, zero_offset=1)
    assert prepare_gptq_weight(**raw, bits=4, group_size=32, sym=True).perm is None


def test_prepare_rejects_bad_inputs() -> None:
    raw = make_gptq(128, 16, 4, 32, sym=False, act=False, zero_offset=1)
    with pytest.raises(ValueError, match="sym=True"):
        prepare_gptq_weight(**raw, bits=4, group_size=32, sym=True)
    with pytest.raises(ValueError, match="exactly group_size"):
        prepare_gptq_weight(**{**raw, "g_idx": torch.zeros(128, dtype=torch.int32)}, bits=4, group_size=32, sym=False)
    with pytest.raises(ValueError, match="scales shape"):
        prepare_gptq_weight(**{**raw, "scales": raw["scales"][:2]}, bits=4, group_size=32, sym=False)
    with pytest.raises(ValueError, match="3- and 4-bit"):
        prepare_gptq_weight(**raw, bits=8, group_size=32, sym=False)
    with pytest.raises(ValueError, match="checkpoint_format"):
        prepare_gptq_weight(**raw, bits=4, group_size=32, sym=False, checkpoint_format="awq")


@pytest.mark.parametrize("bits", [3, 4])
def test_k_major_repack_round_trips(bits: int) -> None:
    raw = make_gptq(256, 24, bits, 64, sym=False, act=True, zero_offset=1)
    w = prepare_gptq_weight(**raw, bits=bits, group_size=64, sym=False)
    kw = to_k_major(w)
    rows = 256 * bits // 32
    assert kw.qweight.stride() == (1, rows), "K-major: consecutive packed rows are adjacent in memory"
    assert torch.equal(kw.qweight, w.qweight), "same values, read through the same [rows, N] indexing"
    assert torch.equal(kw.qweight.t().contiguous().t().contiguous(), w.qweight)  # and back
    assert kw.qweight.data_ptr() != w.qweight.data_ptr() and kw.perm is w.perm and kw.scales is w.scales


def test_tuner_guard_rejects_a_disagreeing_output() -> None:
    """The tuner's correctness guard: a candidate whose output is off by more than 1% is refused."""
    from inlaid_worker.kernels.quant_matmul_config import agrees

    ref = torch.randn(4, 64)
    assert agrees(ref + 1e-4 * torch.randn(4, 64), ref)
    assert not agrees(ref + 0.1 * torch.randn(4, 64), ref)
    assert not agrees(torch.full_like(ref, float("nan")), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tuner only tunes on CUDA")
def test_tuner_never_picks_a_rejected_candidate() -> None:
    from inlaid_worker.kernels import quant_matmul_config as qc

    x = torch.randn(4, 4096, dtype=torch.float16, device="cuda")
    raw = {k: v.cuda() for k, v in make_gptq(4096, 1024, 4, 128, sym=True, act=False, zero_offset=1).items()}
    w = prepare_gptq_weight(**raw, bits=4, group_size=128, sym=True)
    qc._TUNED.clear()
    cfg = qc.pick_config(x, w, lambda c: None, lambda c: c.kind == "dequant")
    assert cfg.kind == "dequant"


def test_half2_gemv_is_offered_only_for_4bit_fp16_small_m() -> None:
    """The half2 GEMV (inline PTX on fp16 pairs) is a tuning candidate only where it is defined."""
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs

    def kinds(m: int, bits: int, dtype: torch.dtype) -> set[str]:
        return {c.kind for c in candidate_configs(m, 11008, 4096, 128, bits, dtype)}

    assert "hgemv" in kinds(1, 4, torch.float16) and "hgemv" in kinds(16, 4, torch.float16)
    assert "hgemv" not in kinds(1, 4, torch.bfloat16)
    assert "hgemv" not in kinds(1, 3, torch.float16)
    assert "hgemv" not in kinds(32, 4, torch.float16)
    first = candidate_configs(1, 11008, 4096, 128, 4)[0]
    assert first.kind == "gemv", "the untuned default (CPU, graph capture) stays the v3 GEMV"


def test_tensor_core_operand_order_matches_the_pair_unpacking() -> None:
    """quant_tcg's operand column idx = 32wi + 8s + 2t + e is nibble s + 4e of word 4t + wi, i.e. tile row
    operand_rows()[idx]; the kernel's pair step (w >> 4s) & 0x000f000f yields exactly nibbles (s, s + 4)."""
    from inlaid_worker.kernels.quant_tcg import operand_rows

    rows = operand_rows()
    assert sorted(rows.tolist()) == list(range(128)), "a permutation of the tile's 128 rows"
    q = torch.randint(0, 16, (128, 3), dtype=torch.int32)  # one K tile, 3 columns
    words = pack_bitstream(q, 4, 0).to(torch.int64) & 0xFFFFFFFF  # [16 words, 3]
    operand = torch.empty(128, 3, dtype=torch.int64)
    for idx in range(128):
        wi, s, t, e = idx // 32, (idx // 8) % 4, (idx // 2) % 4, idx % 2
        pair = (words[4 * t + wi] >> (4 * s)) & 0x000F000F
        operand[idx] = (pair >> (16 * e)) & 0xF
    assert torch.equal(operand, q[rows].to(torch.int64))


def test_tensor_core_kernel_is_offered_for_4bit_m3_and_up() -> None:
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs

    def kinds(m: int, bits: int = 4, k: int = 4096, group: int = 128) -> set[str]:
        return {c.kind for c in candidate_configs(m, 11008, k, group, bits)}

    tc = {"tc", "tc2", "tcf2"}
    assert kinds(8) & tc and kinds(16) & tc and kinds(64) & tc and kinds(256) & tc
    assert kinds(4) & tc and kinds(3) & tc, "M = 3-4 may run in an 8-row tile"
    assert not kinds(2) & tc and not kinds(1) & tc
    assert not kinds(16, bits=3) & {"tc2", "tcf2"}, "3-bit tiles build the operand whole (quant_tc3)"
    assert not kinds(16, k=4096 + 64, group=64) & tc, "K tiles of 128 must fit the group"
