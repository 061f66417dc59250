"""Grouped multi-LoRA for per-row batches (kernels.lora_grouped) against the torch reference and the BGMV kernels.

CPU: the cases run under TRITON_INTERPRET=1 in a subprocess (this file as a script): decode-graph staging (one row
per block, padding rows of slot 0 with no row), one adapter over 20 rows (two tiles: 16 + 4 rows), three adapters
over 40 rows with mixed ranks, rank 64 (one 64-wide rank block), 1 to 3 segments, a split K walk, and a grid of
few programs so each walks several work items; every PDL mode (USE_GDC 1-3) gives mode 0's output; and the sm_90
PTX (built offline) loads only the staged row metadata before griddepcontrol.wait.
CUDA: the same cases at fp16 in-process.
"""

from __future__ import annotations

import zlib
from typing import Any

import pdl_helpers as ph
import pytest
import torch

CUDA = torch.cuda.is_available()

# (rows' adapter slots (-1: base row), K, output widths (1-3 segments), rank, graph staging, programs per SM)
CASES: dict[str, tuple] = {
    "graph-rows-3seg-r16": ([1, 0, -1, 2, 0, 0, 1, -1, 2], 256, (64, 32, 32), 16, True, (4, 8)),
    "one-adapter-20-rows-r64": ([0] * 20, 384, (300,), 64, True, (1, 1)),  # 2 row tiles x 2 N tiles, 2 programs
    "three-adapters-40-rows-2seg": ([i % 3 if i % 7 else -1 for i in range(40)], 640, (80, 48), 32, False, (1, 2)),
}


def _pools(k: int, widths: tuple, rank: int, device: str, dt: torch.dtype, seed: int) -> list:
    from inlaid_worker.kernels.lora_batch import stack_adapters

    g = torch.Generator().manual_seed(seed)
    pools = []
    for n in widths:
        adapters = []
        for slot in range(3):
            r = rank if slot % 2 == 0 else max(1, rank // 2)  # mixed ranks: rows past r are padding
            a = (torch.randn(r, k, generator=g) / k**0.5).to(device=device, dtype=dt)
            b = torch.randn(n, r, generator=g).to(device=device, dtype=dt)
            adapters.append((a, b, 2.0 / r))
        pools.append(stack_adapters(adapters, rank))
    return pools


def _case(case_id: str, device: str) -> list[torch.Tensor]:
    """[grouped y, |grouped - BGMV| max, |grouped - reference| max]."""
    from inlaid_worker.kernels import lora_grouped
    from inlaid_worker.kernels.lora_batch import LoraBatch, make_lora_batch
    from inlaid_worker.kernels.lora_fused import lora_apply_fused, lora_fused_reference

    ids, k, widths, rank, graph_rows, per_sm = CASES[case_id]
    lora_grouped.PROGRAMS_PER_SM = per_sm
    dt = torch.float16 if device == "cuda" else torch.float32
    seed = zlib.crc32(case_id.encode())
    pools = _pools(k, widths, rank, device, dt, seed)
    g = torch.Generator().manual_seed(seed + 1)
    t = len(ids)
    x = torch.randn(t, k, generator=g).to(device=device, dtype=dt)
    y0 = torch.randn(t, sum(widths) + 8, generator=g).to(device=device, dtype=dt)  # 8 columns no segment owns
    if graph_rows:  # as decode_graphs stages a bucket
        ar = torch.arange(t, dtype=torch.int32, device=device)
        slot = torch.tensor([max(a, 0) for a in ids], dtype=torch.int32, device=device)
        rows = torch.tensor([int(a >= 0) for a in ids], dtype=torch.int32, device=device)
        batch = LoraBatch(ar, slot, ar, rows, 1, t, rank)
    else:
        batch = make_lora_batch(ids, [int(r) for r in pools[0].ranks], 1, device)
    cols = [8 + sum(widths[:i]) for i in range(len(widths))]
    pools_r, cols = pools[::-1], cols[::-1]  # segments given out of column order
    y = y0.clone()
    lora_grouped.lora_apply_grouped(y, x, pools_r, cols, batch)
    y_bgmv = lora_apply_fused(y0.clone(), x, pools_r, cols, batch)
    ref = lora_fused_reference(y0, x, pools_r, cols, torch.tensor(ids, device=device))
    diff = (y.float() - y_bgmv.float()).abs().max().reshape(1)
    return [y, diff, (y.float() - ref.float()).abs().max().reshape(1)]


def run_case(case_id: str, device: str) -> dict[str, Any]:
    outs, res = ph.run_modes(lambda: _case(case_id, device))
    return dict(res, vs_bgmv=float(outs[0][1].max()), err=float(outs[0][2].max()),
                base_rows_same=bool(_base_rows_same(case_id, outs[0][0], device)))  # fmt: skip


def _base_rows_same(case_id: str, y: torch.Tensor, device: str) -> bool:
    """Rows of adapter -1 and the 8 unowned columns keep y0's values bit for bit."""
    ids, k, widths, *_ = CASES[case_id]
    g = torch.Generator().manual_seed(zlib.crc32(case_id.encode()) + 1)
    dt = torch.float16 if device == "cuda" else torch.float32
    torch.randn(len(ids), k, generator=g)
    y0 = torch.randn(len(ids), sum(widths) + 8, generator=g).to(device=device, dtype=dt)
    base = torch.tensor([a < 0 for a in ids], device=device)
    return bool(torch.equal(y[base], y0[base]) and torch.equal(y[:, :8], y0[:, :8]))


@pytest.fixture(scope="module")
def grouped_case() -> Any:
    if CUDA:
        return lambda case_id: run_case(case_id, "cuda")
    return ph.interpreted_cases(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_grouped_matches_reference_and_bgmv(case_id: str, grouped_case: Any) -> None:
    res = grouped_case(case_id)
    assert "error" not in res, res.get("error")
    tol = 2e-2 if CUDA else 1e-3  # fp16 outputs of magnitude ~10 on CUDA; fp32 on the CPU
    assert res["err"] < tol and res["vs_bgmv"] < tol, res
    assert res["base_rows_same"], res
    ph.assert_same_as_mode0(res)


def test_grouped_ok_takes_per_row_batches_up_to_max_rows() -> None:
    from inlaid_worker.kernels import lora_grouped
    from inlaid_worker.kernels.lora_batch import make_lora_batch

    assert lora_grouped.grouped_ok(make_lora_batch([0, 1, -1], [8, 8], 1, "cpu"))
    assert not lora_grouped.grouped_ok(make_lora_batch([0] * 20, [8], 16, "cpu"))  # SGMV tiles: lora_fused
    assert not lora_grouped.grouped_ok(make_lora_batch([-1, -1], [8], 1, "cpu"))  # no block
    big = make_lora_batch(list(range(lora_grouped.MAX_ROWS + 1)), [8] * (lora_grouped.MAX_ROWS + 1), 1, "cpu")
    assert not lora_grouped.grouped_ok(big)


def test_kernel_context_dispatches_per_row_batches_to_grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.model import kernel_lora

    calls: list[str] = []
    monkeypatch.setattr(kernel_lora, "lora_apply_grouped", lambda *a: calls.append("grouped"))
    monkeypatch.setattr(kernel_lora, "lora_apply_fused", lambda *a: calls.append("fused"))
    from inlaid_worker.kernels.lora_batch import make_lora_batch

    assert kernel_lora.GROUPED is False, "off until 32 distinct adapters are no slower (lora_grouped's docstring)"
    y = torch.zeros(3, 4)
    monkeypatch.setattr(kernel_lora, "GROUPED", True)
    kernel_lora._apply(y, y, [], [], make_lora_batch([0, 1, -1], [8, 8], 1, "cpu"))
    kernel_lora._apply(y, y, [], [], make_lora_batch([0] * 20, [8], 16, "cpu"))
    monkeypatch.setattr(kernel_lora, "GROUPED", False)
    kernel_lora._apply(y, y, [], [], make_lora_batch([0, 1, -1], [8, 8], 1, "cpu"))
    assert calls == ["grouped", "fused", "fused"]


def test_grouped_kernels_read_only_staged_rows_before_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """kernels.pdl's rules in the sm_90 PTX (built offline, nothing runs; test_pdl_ptx_order's checker): with USE_GDC
    1 both kernels store nothing before griddepcontrol.wait and load only the staged row metadata before it."""
    from inlaid_worker.kernels.lora_batch import LoraBatch, stack_adapters
    from inlaid_worker.kernels.lora_grouped import lora_apply_grouped
    from test_pdl_ptx_order import LORA_META, _check, _record

    k, widths, rank, t = 256, (64, 32, 32), 64, 5
    pools = [stack_adapters([(torch.zeros(rank, k, dtype=torch.float16), torch.zeros(n, rank, dtype=torch.float16),
                              1.0)] * 3, rank) for n in widths]  # fmt: skip
    ar = torch.arange(t, dtype=torch.int32)
    batch = LoraBatch(ar, torch.tensor([0, 1, 0, 2, 0], dtype=torch.int32), ar, torch.ones(t, dtype=torch.int32), 1,
                      t, rank)  # fmt: skip
    x, y = torch.zeros(t, k, dtype=torch.float16), torch.zeros(t, sum(widths), dtype=torch.float16)
    seen = _record(monkeypatch, lambda: lora_apply_grouped(y, x, pools, [0, 64, 96], batch))
    assert [fn.__name__ for fn, _, _ in seen] == ["_gshrink_kernel", "_gexpand_kernel"]
    assert _check(seen, {"_gshrink_kernel": LORA_META, "_gexpand_kernel": LORA_META}) == 2


def main() -> None:
    ph.print_case_results(list(CASES), run_case)


if __name__ == "__main__":
    main()
