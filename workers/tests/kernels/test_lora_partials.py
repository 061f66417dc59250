"""Split-K partials in the multi-LoRA kernels (lora_fused.PARTIALS_MAX_ROWS): per-row batches of at most 16 blocks
store each K split's partial in its own slice of v [T, split, R] and the expand sums them (no zero-fill, no atomics);
larger batches keep the atomics into a zeroed v.

CPU: the cases run under TRITON_INTERPRET=1 in a subprocess (this file as a script); CUDA: in-process at fp16. Each
case runs lora_apply_fused with the partials on and off (PARTIALS_MAX_ROWS 16 / 0) against lora_fused_reference,
with the partials buffer filled with NaN first (a read of an element no split stored would show), and checks that the
plan took the path the case names.
"""

from __future__ import annotations

import zlib
from typing import Any

import pdl_helpers as ph
import pytest
import torch
from lora_pools import lora_inputs

CUDA = torch.cuda.is_available()

# (rows' adapter slots (-1: base row), K, output widths, rank, decode-graph staging, partials expected)
CASES: dict[str, tuple] = {
    "one-row-3seg-split4": ([0], 512, (64, 32, 32), 16, True, True),  # the decode graph's bucket 1
    "graph-rows-split3-pad": ([1, 0, -1, 2], 384, (48,), 16, True, True),  # 3 splits in a BLOCK_S of 4, padding row
    "16-rows-r64-rank-blocks": ([i % 3 for i in range(16)], 256, (40, 24), 64, False, True),  # 2 shrink rank blocks
    "17-rows-atomics": ([i % 3 for i in range(17)], 256, (32,), 16, False, False),  # over the limit: atomics
}


def _case(case_id: str, device: str) -> dict[str, Any]:
    from inlaid_worker.kernels import lora_fused

    ids, k, widths, rank, graph_rows, _ = CASES[case_id]
    pools, x, y0, batch = lora_inputs(ids, k, widths, rank, graph_rows, device, zlib.crc32(case_id.encode()), True)
    cols = [sum(widths[:i]) for i in range(len(widths))]
    ref = lora_fused.lora_fused_reference(y0, x, pools, cols, torch.tensor(ids, device=device)).float()
    alloc, limit, out = lora_fused.alloc_v, lora_fused.PARTIALS_MAX_ROWS, {}

    def poisoned(t_: int, width: int, plan: Any, dev: torch.device) -> torch.Tensor:
        v = alloc(t_, width, plan, dev)
        return v.fill_(float("nan")) if plan.partials else v

    lora_fused.alloc_v = poisoned
    try:
        for setting in (16, 0):
            lora_fused.PARTIALS_MAX_ROWS = setting
            y = lora_fused.lora_apply_fused(y0.clone(), x, pools, cols, batch)
            plan = lora_fused.shrink_plan(batch, lora_fused.segment_args(pools), k, len(pools))
            base = torch.tensor([a < 0 for a in ids], device=device)
            out[setting] = dict(err=float((y.float() - ref).abs().max()), split=plan.split, partials=plan.partials,
                                base_same=bool(torch.equal(y[base], y0[base])), y=y.float())  # fmt: skip
    finally:
        lora_fused.alloc_v, lora_fused.PARTIALS_MAX_ROWS = alloc, limit
    return dict(err=out[16]["err"], err_atomic=out[0]["err"], split=out[16]["split"], partials=out[16]["partials"],
                partials_off=out[0]["partials"], base_same=out[16]["base_same"] and out[0]["base_same"],
                vs_atomic=float((out[16]["y"] - out[0]["y"]).abs().max()),
                scale=float(ref.abs().max()))  # fmt: skip


def run_case(case_id: str, device: str) -> dict[str, Any]:
    return _case(case_id, device)


@pytest.fixture(scope="module")
def partials_case() -> Any:
    return (lambda case_id: run_case(case_id, "cuda")) if CUDA else ph.interpreted_cases(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_partials_match_reference_and_atomics(case_id: str, partials_case: Any) -> None:
    res = partials_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["split"] > 1, "every case splits K (else there is nothing to sum)"
    assert res["partials"] == CASES[case_id][5] and not res["partials_off"], res
    tol = 2e-3 * max(1.0, res["scale"]) if CUDA else 1e-3  # fp16 outputs on CUDA; fp32 on the CPU
    assert res["err"] < tol and res["err_atomic"] < tol and res["vs_atomic"] < tol, res  # NaN fails these too
    assert res["base_same"], "rows of adapter -1 keep their values bit for bit"


def test_partials_plan_for_the_decode_buckets() -> None:
    """Bucket 1 / 16 of a 7B rank-16 q/k/v/o adapter: 32 K splits of one 128-wide tile each, partials, no zero-fill;
    bucket 17 keeps the atomics (and the zero-filled v)."""
    from inlaid_worker.kernels import lora_fused
    from inlaid_worker.kernels.lora_batch import LoraBatch, stack_adapters

    pool = stack_adapters([(torch.zeros(16, 4096), torch.zeros(4096, 16), 1.0)])
    s = lora_fused.segment_args([pool] * 3)
    for rows, partials in ((1, True), (16, True), (17, False)):
        ar = torch.arange(rows, dtype=torch.int32)
        plan = lora_fused.shrink_plan(LoraBatch(ar, ar * 0, ar, ar * 0 + 1, 1, rows, 16), s, 4096, 3)
        assert (plan.split, plan.iters, plan.rb, plan.partials) == (32, 1, 1, partials), (rows, plan)
        v = lora_fused.alloc_v(rows, 48, plan, torch.device("cpu"))
        assert v.shape == ((rows, 32, 48) if partials else (rows, 48))


def main() -> None:
    ph.print_case_results(list(CASES), run_case)


if __name__ == "__main__":
    main()
