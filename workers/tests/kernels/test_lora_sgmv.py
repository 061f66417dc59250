"""Multi-LoRA shrink/expand (Triton) vs the torch reference, plus the batch metadata builder."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from cases import LORA_CASES
from inlaid_worker.kernels.lora_batch import choose_block_m, make_lora_batch, stack_adapters


@pytest.mark.parametrize("case_id", list(LORA_CASES))
def test_lora_apply_matches_reference(case_id: str, kernel_case: Callable[[str], dict]) -> None:
    res = kernel_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["err"] < (1e-2 if LORA_CASES[case_id].get("dtype") == "bf16" else 2e-3), res
    assert res["base_unchanged"], "tokens with adapter -1 must be left bit-identical"


def test_batch_blocks_never_mix_adapters_and_skip_base_tokens() -> None:
    ids = [2, -1, 0, 2, 2, -1, 0, 1]
    batch = make_lora_batch(ids, ranks=[8, 16, 32], block_m=16, device="cpu")
    assert sorted(batch.token_ids.tolist()) == [0, 2, 3, 4, 6, 7]
    for a, start, n in zip(batch.blk_adapter.tolist(), batch.blk_start.tolist(), batch.blk_len.tolist()):
        toks = batch.token_ids[start : start + n].tolist()
        assert all(ids[t] == a for t in toks)
    assert batch.max_rank == 32 and batch.num_tokens == 8


def test_bgmv_blocks_have_one_token_each() -> None:
    batch = make_lora_batch([0, 0, 1, -1], ranks=[8, 8], block_m=1, device="cpu")
    assert batch.blk_len.tolist() == [1, 1, 1]


def test_choose_block_m_uses_bgmv_for_decode_and_sgmv_for_prefill() -> None:
    assert choose_block_m([0, 1, 2, 3, -1]) == 1
    assert choose_block_m([0] * 100 + [1] * 100) == 32
    assert choose_block_m([-1, -1]) == 1


def test_metadata_and_pool_validation() -> None:
    with pytest.raises(ValueError, match="outside"):
        make_lora_batch([3], ranks=[8], block_m=1, device="cpu")
    with pytest.raises(ValueError, match="block_m"):
        make_lora_batch([0], ranks=[8], block_m=8, device="cpu")
    with pytest.raises(ValueError, match="do not fit"):
        stack_adapters([(torch.zeros(8, 16), torch.zeros(32, 4), 1.0)])
