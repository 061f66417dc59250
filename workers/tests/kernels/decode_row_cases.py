"""Check cases for paged_decode's impl "row" (kernels.decode_row) against paged_decode_reference; run in-process on
CUDA, or as a script under TRITON_INTERPRET=1 on the CPU (prints one JSON line: case id -> result). Small shapes.

Every case: rows of 9, 0 (padding), 1, 23 and 4 tokens over blocks of 4, the partition workspace NaN-filled (a row
the merge reads but no partition wrote shows), the arrival counters must be left at 0, a second launch must give
the same output."""

from __future__ import annotations

from typing import Any

import torch
from fused_cases import _nan_workspace, _rel
from hgemv_variants import main, seeded_cases

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}

# block_n 4 / 2 / 1: a tile inside one cache block (scalar table entry); 8, 16: across blocks (a table entry a row);
# lookahead 1 (the default: the next tile in flight) and 0 (mha-fp32-2parts-tile8-d24)
ROW_CASES: dict[str, dict[str, Any]] = {
    "mha-fp16-4parts-tile4": dict(dtype="fp16", heads=2, kv_heads=2, d=32, parts=4, opts=dict(block_n=4, lookahead=1)),
    "mha-fp32-2parts-tile8-d24": dict(
        dtype="fp32", heads=3, kv_heads=3, d=24, parts=2, opts=dict(block_n=8, lookahead=0)
    ),
    "gqa-fp16-8parts-tile2": dict(
        dtype="fp16", heads=4, kv_heads=2, d=16, parts=8, opts=dict(block_n=2, lookahead=1, num_warps=1)
    ),  # fmt: skip
    "gqa3-fp32-4parts-noprefetch": dict(dtype="fp32", heads=6, kv_heads=2, d=16, parts=4, opts=dict(prefetch=0)),
    "gqa-fp16-1part-2warps": dict(dtype="fp16", heads=4, kv_heads=1, d=16, parts=1, opts=dict(num_warps=2)),
    "mha-fp32-16parts-tile1": dict(dtype="fp32", heads=1, kv_heads=1, d=16, parts=16, opts=dict(block_n=1)),
}


def run_row(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels import decode_fused
    from inlaid_worker.kernels import paged_decode as pd_mod

    dtype, bs, blocks = DTYPES[p["dtype"]], 4, 24
    k_cache = torch.randn(blocks, bs, p["kv_heads"], p["d"], device=dev).to(dtype)
    v_cache = torch.randn(blocks, bs, p["kv_heads"], p["d"], device=dev).to(dtype)
    lens = torch.tensor([9, 0, 1, 23, 4], dtype=torch.int32, device=dev)
    tables = torch.stack([torch.randperm(blocks)[:6] for _ in lens]).to(dev, torch.int32)
    q = torch.randn(len(lens), p["heads"], p["d"], device=dev).to(dtype)
    scale = p["d"] ** -0.5
    plain, pd_mod.workspace = pd_mod.workspace, _nan_workspace
    try:
        out = pd_mod.paged_decode(q, k_cache, v_cache, tables, lens, scale, num_parts=p["parts"], impl="row",
                                  **p["opts"])  # fmt: skip
        again = pd_mod.paged_decode(q, k_cache, v_cache, tables, lens, scale, num_parts=p["parts"], impl="row",
                                    **p["opts"])  # fmt: skip
    finally:
        pd_mod.workspace = plain
    ref = pd_mod.paged_decode_reference(q, k_cache, v_cache, tables, lens, scale)
    cnt = decode_fused._COUNTERS.get(k_cache.device)
    return dict(err=_rel(out, ref), pad_row_zero=bool((out[1] == 0).all()), rerun_same=bool(torch.equal(out, again)),
                counters_clean=cnt is None or bool((cnt == 0).all()))  # fmt: skip


def check_launch_hygiene(res: dict[str, Any]) -> None:
    """What every row-kernel case must show besides its error bound (decode_row, its merge and rotary forms)."""
    assert res["pad_row_zero"], "a sequence with context 0 (graph padding) must get zeros"
    assert res["counters_clean"], "the arrival counters must be left at 0 for the next launch (graph replays)"
    assert res["rerun_same"], "a second launch over the same inputs must give the same output"


run_case = seeded_cases(ROW_CASES, run_row)


if __name__ == "__main__":
    main(list(ROW_CASES), run_case)
