"""The v5 look-ahead half2 GEMV (quant_matmul kind "hgemvp") vs the torch reference and vs the v4 loop.

On CUDA the cases run in-process; on the CPU they run once in a subprocess under TRITON_INTERPRET=1 (this file
as a script), where the same bit-level steps run as Triton ops instead of inline PTX. The shapes are chosen so
that a program's last K tiles make the look-ahead run past its range (it must re-read its own last tile, never
the next program's or out of bounds), with act-order, odd N, a group of two K tiles and two row blocks.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, check_result, compare, main, make_case

# (K, N, M, group, sym, act-order, checkpoint format, block_k, block_m, split_k, look-ahead[, words' eviction hint])
AHEAD_CASES: dict[str, tuple] = {
    "a1-ragged-m1": (640, 40, 1, 128, False, False, "gptq", 128, 1, 2, 1),  # 5 tiles: programs of 3 and 2
    "a2-ragged-m1": (640, 40, 1, 128, False, False, "gptq", 128, 1, 2, 2),
    "a2-act-bk64-m3": (512, 40, 3, 128, False, True, "gptq", 64, 4, 2, 2),  # two K tiles per group, perm gather
    "a1-sym-oddN-nosplit-m2": (384, 51, 2, 128, True, False, "gptq", 128, 2, 1, 1),
    "a2-v2-g64-two-row-blocks-m5": (768, 40, 5, 64, False, False, "gptq_v2", 64, 4, 3, 2),
    "a2-one-tile-per-program-m1": (256, 40, 1, 128, False, False, "gptq", 128, 1, 2, 2),
    "a1-evict-first-words-m2": (640, 40, 2, 128, False, True, "gptq", 128, 2, 2, 1, "evict_first"),
}


def run_case(case_id: str, device: str) -> dict[str, Any]:
    """Relative error vs the reference, the v4 loop's output difference, and a repeat (workspace clean)."""
    from inlaid_worker.kernels.quant_hgemv import launch_hgemv
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n, m, g, sym, act, fmt, bk, bm, split, ahead, *policy = AHEAD_CASES[case_id]
    raw, w, x = make_case(case_id, k, n, m, g, sym, act, fmt, device)

    def run(kind: str, stages: int) -> torch.Tensor:
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        if policy and kind == "hgemvp":  # the bench's ablation knob, not reachable through a QMMConfig
            launch_hgemv(x, w, bm, 64, bk, split, 2, 1, y, ahead=stages, word_policy=policy[0])
        else:
            launch_quant_matmul(x, w, QMMConfig(bm, 64, bk, split, 2, stages, False, kind), y)
        return y

    return compare(run("hgemvp", ahead), run("hgemvp", ahead), run("hgemv", 1), x, raw, w)


@pytest.fixture(scope="module")
def ahead_case() -> Any:
    return case_runner(__file__, run_case, "look-ahead", 300)


@pytest.mark.parametrize("case_id", list(AHEAD_CASES))
def test_lookahead_gemv_matches_reference_and_v4(case_id: str, ahead_case: Any) -> None:
    check_result(ahead_case(case_id), AHEAD_CASES[case_id][2], AHEAD_CASES[case_id][1])


def test_lookahead_is_offered_for_4bit_fp16_up_to_m4_only() -> None:
    from inlaid_worker.kernels.quant_matmul_config import candidate_configs

    def ahead(m: int, bits: int = 4, dtype: torch.dtype = torch.float16) -> set[int]:
        return {c.num_stages for c in candidate_configs(m, 11008, 4096, 128, bits, dtype) if c.kind == "hgemvp"}

    assert ahead(1) == {1, 2} and ahead(4) == {1, 2}
    assert not ahead(8) and not ahead(1, bits=3) and not ahead(1, dtype=torch.bfloat16)
    assert {c.block_m for c in candidate_configs(3, 4096, 4096, 128) if c.kind == "hgemvp"} == {4}


def test_launch_rejects_a_bad_lookahead() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemv import launch_hgemv

    w = prepare_gptq_weight(**make_gptq(256, 16, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 256, dtype=torch.float16), torch.empty(1, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match="ahead"):
        launch_hgemv(x, w, 1, 64, 128, 1, 2, 1, y, ahead=3)
    with pytest.raises(ValueError, match="word_policy"):
        launch_hgemv(x, w, 1, 64, 128, 1, 2, 1, y, ahead=1, word_policy="evict_last")


def test_split_launch_covers_every_k_tile_once() -> None:
    """The launch shells' shared argument builder: grid, ITERS x SPLIT_K and the workspace only with a split."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_common import split_launch

    w = prepare_gptq_weight(**make_gptq(640, 72, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(3, 640, dtype=torch.float16), torch.empty(3, 72, dtype=torch.float16)
    grid, args, consts = split_launch(x, w, y, 2, 64, 128, 2)
    iters, split = args[12], args[13]
    assert grid == (2, 2, 2) and (iters, split) == (3, 2) and (split - 1) * iters < 5 <= split * iters
    assert args[6] is not y and consts["USE_SPLIT"] and not consts["HAS_PERM"]
    grid, args, consts = split_launch(x, w, y, 1, 64, 128, 1)
    assert grid == (2, 1, 3) and args[6] is y and not consts["USE_SPLIT"]


if __name__ == "__main__":
    main(list(AHEAD_CASES), run_case)
