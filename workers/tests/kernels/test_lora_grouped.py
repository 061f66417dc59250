"""Grouped multi-LoRA for per-row batches (kernels.lora_grouped) against the torch reference and the BGMV kernels.

CPU: the cases run under TRITON_INTERPRET=1 in a subprocess (this file as a script): decode-graph staging (one row
per block, padding rows of slot 0 with no row), one adapter over 20 rows (two tiles: 16 + 4 rows), padding rows
before and after an adapter's 17 rows (they must not count in a row's position within its adapter: else its second
tile starts one row early and a row is added twice), three adapters over 40 rows with mixed ranks and distinct
scalings, rank 64 (one 64-wide rank block), 1 to 3 segments, a split K walk, and a grid of few programs so each walks
several work items; every PDL mode (USE_GDC 1-3) gives mode 0's output (on the GPU within 1e-2: split-K atomics add
in a varying order); and the sm_90 PTX (built offline) loads only the staged row metadata before griddepcontrol.wait.
The cases run in fp32 on the CPU: the interpreter's tl.dot is an exact fp32 matmul there. The 16-bit (fp16 / bf16)
paths run on the CPU in test_cpu_cov_lora_grouped.py (bf16 under cpu_cov_bf16.patch_bf16: the stock interpreter's
bf16 tl.dot is off by ~1e10 on Triton 3.6, reviewer R4).
CUDA: the same cases at fp16 in-process.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pdl_helpers as ph
import pytest
import torch
from lora_pools import lora_inputs

CUDA = torch.cuda.is_available()

# (rows' adapter slots (-1: base row), K, output widths (1-3 segments), rank, graph staging, programs per SM)
CASES: dict[str, tuple] = {
    "graph-rows-3seg-r16": ([1, 0, -1, 2, 0, 0, 1, -1, 2], 256, (64, 32, 32), 16, True, (4, 8)),
    "one-adapter-20-rows-r64": ([0] * 20, 384, (300,), 64, True, (1, 1)),  # 2 row tiles x 2 N tiles, 2 programs
    "three-adapters-40-rows-2seg": ([i % 3 if i % 7 else -1 for i in range(40)], 640, (80, 48), 32, False, (1, 2)),
    "padding-rows-around-17-rows": ([-1, 0, -1] + [0] * 17 + [-1] * 4, 128, (32,), 8, True, (4, 8)),
}


@contextmanager
def _programs_per_sm(per_sm: tuple[int, int]) -> Iterator[None]:
    """lora_grouped.PROGRAMS_PER_SM set for one case, restored after it (the CUDA cases run in this process)."""
    from inlaid_worker.kernels import lora_grouped

    prev = lora_grouped.PROGRAMS_PER_SM
    lora_grouped.PROGRAMS_PER_SM = per_sm
    try:
        yield
    finally:
        lora_grouped.PROGRAMS_PER_SM = prev


def _case(case_id: str, device: str) -> list[torch.Tensor]:
    """[grouped y, |grouped - BGMV| max, |grouped - reference| max]."""
    from inlaid_worker.kernels import lora_grouped
    from inlaid_worker.kernels.lora_fused import lora_apply_fused, lora_fused_reference

    ids, k, widths, rank, graph_rows, per_sm = CASES[case_id]
    pools, x, y0, batch = lora_inputs(ids, k, widths, rank, graph_rows, device, zlib.crc32(case_id.encode()), True,
                                      extra_cols=8)  # 8 columns no segment owns  # fmt: skip
    cols = [8 + sum(widths[:i]) for i in range(len(widths))]
    pools_r, cols = pools[::-1], cols[::-1]  # segments given out of column order
    y = y0.clone()
    with _programs_per_sm(per_sm):
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
    if CUDA:  # the shrink's K partials meet by fp32 atomics, whose order varies from launch to launch on the GPU: with
        # 3+ partials (K 384 / 640 here) y's last bit differs at times, in mode 0 against itself too (H200, session
        # 19: up to 4.9e-4; at K 640 in 11 of 20 mode-0 repeats; |y| <= ~5, whose fp16 ulp is 3.9e-3); a read before
        # its producer would be off by O(1)
        assert res["finite"] and max(res["diff1"], res["diff2"], res["diff3"]) < 1e-2, res
    else:  # the interpreter runs the programs in order: exactly mode 0's
        ph.assert_same_as_mode0(res)


def test_grouped_ok_takes_per_row_batches_up_to_max_rows() -> None:
    from inlaid_worker.kernels import lora_grouped
    from inlaid_worker.kernels.lora_batch import make_lora_batch

    x = torch.zeros(1, 8, dtype=torch.float16)
    assert lora_grouped.MAX_ROWS == 64
    assert lora_grouped.grouped_ok(make_lora_batch([0, 1, -1], [8, 8], 1, "cpu"), x)
    assert not lora_grouped.grouped_ok(make_lora_batch([0] * 20, [8], 16, "cpu"), x)  # SGMV tiles: lora_fused
    assert not lora_grouped.grouped_ok(make_lora_batch([-1, -1], [8], 1, "cpu"), x)  # no block
    assert lora_grouped.grouped_ok(make_lora_batch([0] * 64, [8], 1, "cpu"), x)  # exactly MAX_ROWS blocks
    assert not lora_grouped.grouped_ok(make_lora_batch([0] * 65, [8], 1, "cpu"), x)
    assert not lora_grouped.grouped_ok(make_lora_batch(list(range(65)), [8] * 65, 1, "cpu"), x)


def test_fp32_on_cuda_stays_with_bgmv() -> None:
    """On CUDA tl.dot takes fp32 operands as TF32, where BGMV sums fp32 exactly: fp32 goes to the grouped kernels only
    off CUDA (the interpreter's exact fp32 matmul); fp16 / bf16 anywhere."""
    from inlaid_worker.kernels import lora_grouped
    from inlaid_worker.kernels.lora_batch import make_lora_batch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for dt in (torch.float16, torch.bfloat16):
        assert lora_grouped.grouped_dtype_ok(dt, cuda) and lora_grouped.grouped_dtype_ok(dt, cpu)
    assert not lora_grouped.grouped_dtype_ok(torch.float32, cuda)
    assert lora_grouped.grouped_dtype_ok(torch.float32, cpu)
    batch = make_lora_batch([0, 0, 1], [8, 8], 1, "cpu")
    fake_x = SimpleNamespace(dtype=torch.float32, device=cuda)  # grouped_ok reads only these (no GPU here)
    assert not lora_grouped.grouped_ok(batch, fake_x)  # type: ignore[arg-type]
    assert lora_grouped.grouped_ok(batch, SimpleNamespace(dtype=torch.float16, device=cuda))  # type: ignore[arg-type]


def test_grouped_entry_checks_and_empty_batch() -> None:
    """A batch without blocks returns y unchanged (as lora_apply_fused; nothing launches), the shared segment checks
    name lora_apply_grouped, and a batch grouped_ok refuses raises."""
    from inlaid_worker.kernels.lora_batch import make_lora_batch, stack_adapters
    from inlaid_worker.kernels.lora_fused import lora_apply_fused
    from inlaid_worker.kernels.lora_grouped import lora_apply_grouped

    k, n, rank = 32, 16, 8
    pool = stack_adapters([(torch.ones(rank, k), torch.ones(n, rank), 1.0)], rank)
    x, y = torch.ones(3, k), torch.arange(3.0 * n).reshape(3, n)
    empty = make_lora_batch([-1, -1, -1], [rank], 1, "cpu")
    for apply in (lora_apply_grouped, lora_apply_fused):
        out = apply(y.clone(), x, [pool], [0], empty)
        assert torch.equal(out, y), apply.__name__
    with pytest.raises(ValueError, match="^lora_apply_grouped takes 1 to 3 pools"):
        lora_apply_grouped(y, x, [pool] * 4, [0] * 4, empty)
    with pytest.raises(ValueError, match="^lora_apply_fused takes 1 to 3 pools"):
        lora_apply_fused(y, x, [pool] * 4, [0] * 4, empty)
    with pytest.raises(ValueError, match="grouped LoRA takes block_m 1"):
        lora_apply_grouped(y, x, [pool], [0], make_lora_batch([0, 0, -1], [rank], 16, "cpu"))


def test_programs_per_sm_is_restored_after_a_case() -> None:
    """A case's grid setting must not leak into later tests (the CUDA cases run in this process), even on failure."""
    from inlaid_worker.kernels import lora_grouped

    before = lora_grouped.PROGRAMS_PER_SM
    with pytest.raises(RuntimeError), _programs_per_sm((1, 1)):
        assert lora_grouped.PROGRAMS_PER_SM == (1, 1)
        raise RuntimeError("a failing case")
    assert lora_grouped.PROGRAMS_PER_SM == before


def test_kernel_context_dispatches_per_row_batches_to_grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A context takes the grouped kernels where it was built for them (a decode graph's pick_grouped) or GROUPED
    forces them, and only for batches grouped_ok takes (SGMV tiles and fp32 on CUDA stay with lora_fused)."""
    from inlaid_worker.kernels.lora_batch import make_lora_batch
    from inlaid_worker.model import kernel_lora

    calls: list[str] = []
    monkeypatch.setattr(kernel_lora, "lora_apply_grouped", lambda *a: calls.append("grouped"))
    monkeypatch.setattr(kernel_lora, "lora_apply_fused", lambda *a: calls.append("fused"))
    y = torch.zeros(3, 4)
    per_row = make_lora_batch([0, 1, -1], [8, 8], 1, "cpu")
    kernel_lora._apply(y, y, [], [], per_row, True)
    kernel_lora._apply(y, y, [], [], make_lora_batch([0] * 20, [8], 16, "cpu"), True)
    kernel_lora._apply(y, y, [], [], per_row, False)
    for dt in (torch.float32, torch.float16):  # fp32 on CUDA: BGMV (exact fp32 sums, not TF32)
        kernel_lora._apply(y, SimpleNamespace(dtype=dt, device=torch.device("cuda")), [], [], per_row, True)  # type: ignore[arg-type]
    assert calls == ["grouped", "fused", "fused", "fused", "grouped"]
    built = kernel_lora.KernelLoraContext(per_row, None, True)  # type: ignore[arg-type]
    plain = kernel_lora.KernelLoraContext(per_row, None)  # type: ignore[arg-type]  (eager steps, prefill graphs)
    for setting, want in ((kernel_lora.AUTO, (True, False)), (False, (True, False)), (True, (True, True))):
        monkeypatch.setattr(kernel_lora, "GROUPED", setting)
        assert (built._grouped(), plain._grouped()) == want, setting


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
