"""CPU coverage (issue 4) of the decode-path kernels at bf16: paged_decode (impl "tiles": _decode_kernel /
_decode_body / _merge_kernel; impl "split": _split_kernel), decode_fused (_fused_decode_kernel: merge in the kernel,
and with _rope_rows: rotary + KV write + attention), rope_cache (_rope_cache_kernel) and silu_mul (_silu_mul_kernel).
test_decode_kernels.py runs them at fp16 / fp32 only (fused_cases' one bf16 case is a norm). Here the same runners
(fused_cases) at bf16 against the pure-torch references (paged_decode_reference, rope_decode_reference,
rope_and_cache_reference, silu_mul_reference), with a NaN-filled partition workspace, a padding row of context 0,
counters left at 0, and a rerun; under the interpreter with bf16 arithmetic patched in (cpu_cov_bf16.patch_bf16;
one attention case also unpatched, where it must run and be far off). On CUDA in-process. On the CPU: one subprocess,
this file as a script."""

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
    "tiles-gqa-bf16-4parts": dict(
        kind="decode", dtype="bf16", heads=4, kv_heads=2, d=16, parts=4, tiles=dict(tiles_prefetch=1, tiles_block_n=16)
    ),
    "tiles-mha-bf16-4parts-skip": dict(
        kind="decode",
        dtype="bf16",
        heads=2,
        kv_heads=2,
        d=32,
        parts=4,
        tiles=dict(tiles_prefetch=0, tiles_block_n=16, skip_empty=1),
    ),
    "split-gqa-bf16-4parts-merge2": dict(
        kind="decode", dtype="bf16", heads=4, kv_heads=2, d=16, parts=4, impl="split", split=dict(block_n=4, merge=2)
    ),
    "split-mha-bf16-2parts": dict(
        kind="decode", dtype="bf16", heads=3, kv_heads=3, d=24, parts=2, impl="split", split=dict(block_n=2)
    ),
    "fdecode-gqa-bf16-4parts": dict(kind="fdecode", dtype="bf16", heads=4, kv_heads=2, d=16, parts=4),
    "rdecode-mha-bf16-2parts": dict(kind="rdecode", dtype="bf16", heads=2, kv_heads=2, d=32, parts=2),
    "rdecode-gqa-bf16-vec-4parts": dict(kind="rdecode", dtype="bf16", heads=4, kv_heads=2, d=16, parts=4, vec=True),
    "rope-cache-bf16": dict(kind="rope", dtype="bf16", heads=4, kv_heads=2, d=16),
    "silu-mul-bf16": dict(kind="silu", dtype="bf16", inter=80),
}
UNPATCHED = ("tiles-gqa-bf16-4parts",)
EXACT = ("split-", "rope-", "silu-")  # exact on the CPU (measured 0), as are rdecode's k / v / new_k


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    import fused_cases  # type: ignore[import-not-found]

    torch.manual_seed(zlib.crc32(case_id.encode()))
    p = CASES[case_id]
    return fused_cases.RUNNERS[p["kind"]](p, device)


@pytest.fixture(scope="module")
def decode_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.skipif(CUDA, reason="the stock interpreter: CPU only")
def test_without_the_patch_bf16_is_far_off(decode_case: Any) -> None:
    cpu_cov_bf16.assert_far_off(decode_case(f"unpatched:{UNPATCHED[0]}"))


@pytest.mark.parametrize("case_id", list(CASES))
def test_bf16_kernel_matches_reference(case_id: str, decode_case: Any) -> None:
    res = decode_case(case_id)
    cpu_cov_bf16.assert_within(res, cpu_cov_bf16.bf16_tol(exact=case_id.startswith(EXACT)))
    cpu_cov_bf16.assert_within(res, cpu_cov_bf16.bf16_tol(exact=True), tuple(k for k in res if k.endswith("_err")))
    assert res.get("pad_row_zero", True), "a sequence with context 0 (graph padding) must get zeros"
    assert res.get("counters_clean", True), "the arrival counters must be left at 0"
    assert res.get("rerun_same", True), "a second launch over the same inputs must give the same output"
    assert res.get("skipped_untouched", True), "rows with slot -1 must not be written"


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case, UNPATCHED)
