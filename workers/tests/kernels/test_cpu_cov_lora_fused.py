"""CPU coverage (issue 4) of lora_fused's 16-bit paths (_shrink3_kernel, _expand3_kernel through lora_apply_fused):
the CPU tests run it at fp16 (fused_cases' lora3 cases) and fp32 (test_lora_partials, test_pdl_lora), never bf16.
Here: bf16 against lora_fused_reference (pure torch), 1-3 segments, BGMV
rows and SGMV tiles, rows of adapter -1 left bit for bit; under the interpreter with bf16 arithmetic patched in
(cpu_cov_bf16.patch_bf16: its shrink / expand sum in fp32, so the stock interpreter is only off by its fp32 -> bf16
truncation, ~4e-3, where the GPU rounds to nearest). On CUDA in-process. On the CPU: one subprocess, this file as a
script (~4 s)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_cov_bf16  # noqa: E402

CUDA = torch.cuda.is_available()
CASES: dict[str, dict[str, Any]] = {
    "qkv-bgmv-bf16": dict(kind="lora3", dtype="bf16", t=7, block_m=1, segs=(0, 1, 2)),
    "qv-sgmv-bf16": dict(kind="lora3", dtype="bf16", t=40, block_m=16, segs=(0, 2)),
    "k-only-bgmv-bf16": dict(kind="lora3", dtype="bf16", t=5, block_m=1, segs=(1,)),
    "qkv-sgmv-bf16-bm32": dict(kind="lora3", dtype="bf16", t=70, block_m=32, segs=(0, 1, 2)),
}


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    import fused_cases  # type: ignore[import-not-found]

    torch.manual_seed(zlib.crc32(case_id.encode()))
    return fused_cases.run_lora3(CASES[case_id], device)


@pytest.fixture(scope="module")
def fused_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.parametrize("case_id", list(CASES))
def test_bf16_lora_apply_fused_matches_reference(case_id: str, fused_case: Any) -> None:
    res = fused_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["err"] < cpu_cov_bf16.bf16_tol(exact="bgmv" in case_id), res  # BGMV rows: exact on the CPU
    assert res["base_unchanged"], "LoRA must leave rows of adapter -1 bit-identical"


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case)
