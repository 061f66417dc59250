"""CPU coverage (issue 4) of paged_prefill's 16-bit path (_prefill_kernel with BLOCK_N 64, IEEE off): the only CPU
test of the kernel (model/test_prefill_graphs.py, prefill_graphs_case.kernel_error) runs it in fp32 (BLOCK_N 32,
IEEE dots). Here fp16 and bf16 on random paged KV against model.attention.paged_attention_reference (pure torch):
grouped-query heads, a decode row, a whole prompt over several key blocks, a chunk after cached context, a tile of
33 = 32 + 1 rows, padding rows and padding tiles (rows no tile covers must stay exactly zero), head_dim 32 and 24
(D_PAD). bf16 under the interpreter with bf16 arithmetic patched in (cpu_cov_bf16.patch_bf16; one case also
unpatched, where it must be far off). On CUDA in-process. On the CPU: one subprocess, this file as a script."""

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
    "fp16-gqa-d32": dict(dtype=torch.float16, heads=4, kv_heads=2, d=32),
    "bf16-gqa-d32": dict(dtype=torch.bfloat16, heads=4, kv_heads=2, d=32),
    "bf16-mha-d24": dict(dtype=torch.bfloat16, heads=2, kv_heads=2, d=24),
    "fp16-mqa-d24": dict(dtype=torch.float16, heads=3, kv_heads=1, d=24),
}
UNPATCHED = ("bf16-gqa-d32",)
BS = 4  # tokens a KV block


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
    import prefill_graphs_case  # type: ignore[import-not-found]  # model/test_prefill_graphs.py's case

    p = CASES[case_id]
    g = torch.Generator().manual_seed(zlib.crc32(case_id.encode()))
    assert prefill_graphs_case.BS == BS
    err, pad_zero, dtype = prefill_graphs_case.kernel_rows(device, p["dtype"], p["heads"], p["kv_heads"], p["d"], g)
    return dict(err=err, pad_zero=pad_zero, dtype=str(dtype))


@pytest.fixture(scope="module")
def prefill_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.skipif(CUDA, reason="the stock interpreter: CPU only")
def test_without_the_patch_bf16_is_far_off(prefill_case: Any) -> None:
    cpu_cov_bf16.assert_far_off(prefill_case(f"unpatched:{UNPATCHED[0]}"))


@pytest.mark.parametrize("case_id", list(CASES))
def test_16bit_prefill_matches_reference_attention(case_id: str, prefill_case: Any) -> None:
    res = prefill_case(case_id)
    tol = cpu_cov_bf16.bf16_tol() if "bf16" in case_id else 5e-3
    cpu_cov_bf16.assert_within(res, tol)  # max row error; K/V order 1
    assert res["pad_zero"], "rows no tile covers must be exactly zero"
    assert res["dtype"] == str(CASES[case_id]["dtype"])


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case, UNPATCHED)
