"""CPU coverage (issue 4) of lora_grouped's 16-bit paths (_gshrink_kernel, _gexpand_kernel through
lora_apply_grouped): test_lora_grouped.py runs its cases in fp32 on the CPU (fp16 on CUDA), so the fp16 / bf16 tl.dot
operands the GPU takes never run in CI. Here: fp16 and bf16 per-row batches (decode-graph staging with padding rows,
one adapter over 20 rows = two row tiles, three adapters with mixed ranks and distinct scalings, 1-3 segments given
out of column order) against lora_fused_reference (pure torch) and against lora_apply_fused (the BGMV kernels), rows
of adapter -1 and unowned columns left bit for bit; under the interpreter with bf16 arithmetic patched in
(cpu_cov_bf16.patch_bf16; the first bf16 case also unpatched, where it must be far off). On CUDA in-process.
On the CPU: one subprocess, this file as a script (~6 s)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_cov_bf16  # noqa: E402

CUDA = torch.cuda.is_available()
# (rows' adapter slots (-1: base row), K, output widths, rank, dtype)
CASES: dict[str, tuple] = {
    "graph-rows-3seg-r16-fp16": ([1, 0, -1, 2, 0, 0, 1, -1, 2], 256, (64, 32, 32), 16, "fp16"),
    "graph-rows-3seg-r16-bf16": ([1, 0, -1, 2, 0, 0, 1, -1, 2], 256, (64, 32, 32), 16, "bf16"),
    "one-adapter-20-rows-r64-bf16": ([0] * 20, 384, (96,), 64, "bf16"),
    "three-adapters-2seg-r32-fp16": ([i % 3 if i % 7 else -1 for i in range(24)], 640, (80, 48), 32, "fp16"),
    "padding-around-17-rows-r8-bf16": ([-1, 0, -1] + [0] * 17 + [-1] * 4, 128, (32,), 8, "bf16"),
}
UNPATCHED = ("graph-rows-3seg-r16-bf16",)
DT = {"fp16": torch.float16, "bf16": torch.bfloat16}


def run_case(case_id: str, device: str) -> dict[str, Any]:
    import zlib

    from inlaid_worker.kernels.lora_batch import LoraBatch
    from inlaid_worker.kernels.lora_fused import lora_apply_fused, lora_fused_reference
    from inlaid_worker.kernels.lora_grouped import grouped_ok, lora_apply_grouped
    from lora_pools import lora_pools  # type: ignore[import-not-found]

    ids, k, widths, rank, dtype = CASES[case_id]
    dt = DT[dtype]
    seed = zlib.crc32(case_id.encode())
    pools = lora_pools(k, widths, rank, device, dt, seed, True)
    g = torch.Generator().manual_seed(seed + 1)
    t = len(ids)
    x = torch.randn(t, k, generator=g).to(device=device, dtype=dt)
    y0 = (torch.randn(t, sum(widths) + 8, generator=g) * 0.1).to(device=device, dtype=dt)  # 8 unowned columns
    ar = torch.arange(t, dtype=torch.int32, device=device)
    slot = torch.tensor([max(a, 0) for a in ids], dtype=torch.int32, device=device)
    rows = torch.tensor([int(a >= 0) for a in ids], dtype=torch.int32, device=device)
    batch = LoraBatch(ar, slot, ar, rows, 1, t, rank)  # decode-graph staging: one row a block, padding slot 0
    cols = [8 + sum(widths[:i]) for i in range(len(widths))]
    pools_r, cols_r = pools[::-1], cols[::-1]  # segments out of column order
    y = lora_apply_grouped(y0.clone(), x, pools_r, cols_r, batch)
    y_bgmv = lora_apply_fused(y0.clone(), x, pools_r, cols_r, batch)
    ref = lora_fused_reference(y0, x, pools_r, cols_r, torch.tensor(ids, device=device))
    base = torch.tensor([a < 0 for a in ids], device=device)
    delta = (ref.float() - y0.float()).norm()
    return dict(
        grouped_ok=bool(grouped_ok(batch, x)),
        err=float((y.float() - ref.float()).norm() / delta),
        vs_bgmv=float((y.float() - y_bgmv.float()).norm() / delta),
        base_same=bool(torch.equal(y[base], y0[base]) and torch.equal(y[:, :8], y0[:, :8])),
    )


@pytest.fixture(scope="module")
def grouped_case() -> Any:
    return cpu_cov_bf16.case_runner(__file__, run_case)


@pytest.mark.skipif(CUDA, reason="the stock interpreter: CPU only")
def test_without_the_patch_bf16_is_far_off(grouped_case: Any) -> None:
    cpu_cov_bf16.assert_far_off(grouped_case(f"unpatched:{UNPATCHED[0]}"))


@pytest.mark.parametrize("case_id", list(CASES))
def test_grouped_16bit_matches_reference_and_bgmv(case_id: str, grouped_case: Any) -> None:
    res = grouped_case(case_id)
    tol = cpu_cov_bf16.bf16_tol() if CASES[case_id][4] == "bf16" else 2e-3
    cpu_cov_bf16.assert_within(res, tol, ("err", "vs_bgmv"))
    assert res["grouped_ok"], "a per-row 16-bit batch takes the grouped kernels"
    assert res["base_same"], "rows of adapter -1 and unowned columns must keep y's bits"


if __name__ == "__main__":
    cpu_cov_bf16.script_main(list(CASES), run_case, UNPATCHED)
