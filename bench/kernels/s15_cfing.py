"""Session 15: the "+g" decode fusion (the gate/up GEMV leaves its split-K sums in a region of their own, the down GEMV
computes x = silu(gate) * up from them on load, the norm after down clears them: kernels.consumer_finish.gemv_gu_sums /
gu_down_add_norm) against "swiglu+cfin", with s14_cfin.py's protocol (its main, 8 rounds of alternating variants on
one runner, 7B int4 random weights, 512 cached tokens, decode graphs with PDL).
Extra variant part: "gR" = "g" with the down GEMV's pick at M = 2 forced to the half2 row GEMV (hgemvr block_m 2,
block_n 64, block_k 128, split 22, 2 warps: the bucket-1 pick's tiles) instead of the shipped table's tensor-core
"tcs2a", so that "+g" can run at bucket 2 (without it, "+g" falls back to "swiglu+cfin" there); in both "+g" and its
fallback paths. Batch 1 is unchanged by it (down's pick there is hgemvr already).
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s15_cfing.py --out DIR
  --fusions none,swiglu+cfin,swiglu+cfin+g --pairs swiglu+cfin:swiglu+cfin+g,none:swiglu+cfin+g
"""

from __future__ import annotations

import s14_cfin
from inlaid_worker.kernels import consumer_finish as cf
from inlaid_worker.kernels.quant_matmul_config import QMMConfig

_pick = cf.config_for
ROW_DOWN = QMMConfig(2, 64, 128, 22, 2, 1, False, "hgemvr")  # (block_m, block_n, block_k, split, warps, stages, dot)
_state = {"row_down": False}


def config_for(x2, w):  # type: ignore[no-untyped-def]
    """consumer_finish's pick, with down (K = 11008) at M = 2 forced to ROW_DOWN while a "gR" variant is captured."""
    if _state["row_down"] and x2.shape[0] == 2 and w.in_features == 11008:
        return ROW_DOWN
    return _pick(x2, w)


_base_variant = s14_cfin.variant


def variant(name: str) -> str:
    """The row-down switch for a variant name ("gR" parts), then s14_cfin's variant."""
    parts = name.split("+")
    _state["row_down"] = "gR" in parts
    return _base_variant("+".join("g" if p == "gR" else p for p in parts))


if __name__ == "__main__":
    cf.config_for = config_for
    s14_cfin.variant = variant  # s14_cfin.main hands its module's `variant` to s12_norm
    s14_cfin.main()
