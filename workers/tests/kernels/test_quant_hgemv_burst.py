"""The v6 burst half2 GEMV (quant_matmul kind "hgemvb") vs the torch reference and vs the v4 loop.

Burst: each program loads all of its 2..4 K tiles (words, then scales, zeros and x) before it uses any. On CUDA the
cases run in-process; on the CPU once in a subprocess under TRITON_INTERPRET=1 (this file as a script). The shapes
give programs whose last tiles lie past K (they must add exactly 0), act-order, odd N and two K tiles per group.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hgemv_variants import case_runner, check_result, compare, main, make_case

# (K, N, M, group, sym, act-order, checkpoint format, block_k, block_m, split_k) -> K tiles per program
BURST_CASES: dict[str, tuple] = {
    "b3-ragged-m1": (640, 40, 1, 128, False, False, "gptq", 128, 1, 2),  # 5 tiles: programs of 3 and 2
    "b2-even-m2": (512, 40, 2, 128, False, False, "gptq", 128, 2, 2),  # 4 tiles: 2 + 2
    "b4-ragged-act-m3": (896, 40, 3, 128, False, True, "gptq", 128, 4, 2),  # 7 tiles: 4 + 3, perm gather
    "b3-sym-oddN-bk64-m1": (384, 51, 1, 128, True, False, "gptq", 64, 1, 2),  # 6 tiles of 64: 3 + 3
    # a bench-only kind (no tuner candidate, see below): a case per tile count, no two-row-block / gptq_v2 / g64 case
    # (16 tiles at M = 5 took half this file's interpreter time)
}


def per_program(case_id: str) -> int:
    k, *_, bk, _, split = BURST_CASES[case_id]
    return -(-(k // bk) // split)


def run_case(case_id: str, device: str) -> dict[str, Any]:
    """Relative error vs the reference, the v4 loop's output difference, and a repeat (workspace clean)."""
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n, m, g, sym, act, fmt, bk, bm, split = BURST_CASES[case_id]
    raw, w, x = make_case(case_id, k, n, m, g, sym, act, fmt, device)

    def run(kind: str) -> torch.Tensor:
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(x, w, QMMConfig(bm, 64, bk, split, 2, 1, False, kind), y)
        return y

    return compare(run("hgemvb"), run("hgemvb"), run("hgemv"), x, raw, w)


@pytest.fixture(scope="module")
def burst_case() -> Any:
    return case_runner(__file__, run_case, "burst", 600)


def test_cases_cover_two_three_and_four_tiles_per_program() -> None:
    assert {per_program(c) for c in BURST_CASES} == {2, 3, 4}


@pytest.mark.parametrize("case_id", list(BURST_CASES))
def test_burst_gemv_matches_reference_and_v4(case_id: str, burst_case: Any) -> None:
    check_result(burst_case(case_id), BURST_CASES[case_id][2], BURST_CASES[case_id][1])


def test_burst_configs_have_2_to_4_tiles_and_stay_out_of_the_tuner() -> None:
    """The bench's burst configs fit the kernel (<= 4 K tiles per program); the tuner does not offer them (v6: they
    lost to hgemvp on the H200 at M = 1..4, bench/kernels/NOTES.md)."""
    from inlaid_worker.kernels.quant_matmul_config import _hgemvb, candidate_configs

    for mb, k in ((1, 4096), (2, 11008), (4, 4096)):
        tiles = {-(-(k // c.block_k) // c.split_k) for c in _hgemvb(mb, k, 128)}
        assert tiles and tiles <= {2, 3, 4}, (mb, k, tiles)
        assert {c.block_m for c in _hgemvb(mb, k, 128)} == {mb} and {c.kind for c in _hgemvb(mb, k, 128)} == {"hgemvb"}
    assert max(-(-(4096 // c.block_k) // c.split_k) for c in _hgemvb(4, 4096, 128)) == 3  # M = 4 stops at 3
    for m in (1, 2, 4):
        assert not [c for c in candidate_configs(m, 11008, 4096, 128, 4, torch.float16) if c.kind == "hgemvb"]


def test_launch_rejects_more_than_four_tiles_per_program() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemv import launch_hgemv

    w = prepare_gptq_weight(**make_gptq(640, 16, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    x, y = torch.zeros(1, 640, dtype=torch.float16), torch.empty(1, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match="at most 4"):
        launch_hgemv(x, w, 1, 64, 128, 1, 2, 1, y, burst=True)  # 5 tiles in one program


if __name__ == "__main__":
    main(list(BURST_CASES), run_case)
