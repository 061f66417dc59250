"""CPU coverage (issue 4) of lora_sgmv's bf16 path (_shrink_kernel, _expand_kernel through lora_apply): the BGMV
(decode, block_m 1) and SGMV (prefill tiles) launches at bf16 against lora_sgmv.lora_reference (pure torch), rows of
adapter -1 left bit for bit. Triton 3.6's interpreter computes bf16 on raw bits; here (as in test_lora_sgmv.py's bf16
case, through cases.py) the interpreter runs with bf16 arithmetic patched in (cpu_cov_bf16.patch_bf16, checked against
torch's bf16), and the first case also runs unpatched, where it must run and be far off (the check can fail). On CUDA
the cases run in-process. On the CPU: one subprocess, this file as a script (~5 s)."""

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
    "bgmv-bf16-t9": dict(t=9, block_m=1, dtype="bf16"),
    "sgmv-bf16-t50-bm16": dict(t=50, block_m=16, dtype="bf16"),
    "sgmv-bf16-t70-bm32": dict(t=70, block_m=32, dtype="bf16"),
    "bgmv-bf16-all-base": dict(t=5, block_m=1, dtype="bf16", all_base=True),
}
UNPATCHED = ("sgmv-bf16-t50-bm16",)


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    from cases import run_lora  # type: ignore[import-not-found]

    torch.manual_seed(zlib.crc32(case_id.encode()))
    return run_lora(CASES[case_id], device)


@pytest.fixture(scope="module")
def lora_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.skipif(CUDA, reason="the stock interpreter: CPU only")
def test_without_the_patch_bf16_is_far_off(lora_case: Any) -> None:
    cpu_cov_bf16.assert_far_off(lora_case(f"unpatched:{UNPATCHED[0]}"))
    assert lora_case("patch_check")["mul"] == 0.0


@pytest.mark.parametrize("case_id", list(CASES))
def test_bf16_lora_apply_matches_reference(case_id: str, lora_case: Any) -> None:
    res = lora_case(case_id)
    cpu_cov_bf16.assert_within(res, cpu_cov_bf16.bf16_tol(exact=case_id.startswith("bgmv")))  # BGMV: exact on the CPU
    assert res["base_unchanged"], "tokens with adapter -1 must be left bit-identical"


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case, UNPATCHED)
