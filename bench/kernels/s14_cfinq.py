"""Session 14: the "+q" decode fusion (the row attention reads the qkv GEMV's split-K sums, the norm after o clears
them: kernels.consumer_finish.gemv_sums) against "swiglu+cfin", with s14_cfin.py's protocol (its main, 8 rounds of
alternating variants on one runner, 7B int4 random weights, 512 cached tokens, decode graphs with PDL).
Extra variant parts: "qR" = "q" with fused_norm.CLEAR_MODE 1 (the norm's row program clears the region), "qP" = "q"
with CLEAR_MODE 2 (extra programs of the norm clear it, one block each); "q" alone: the module's default.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s14_cfinq.py --out DIR
  --fusions none,swiglu+cfin,swiglu+cfin+qR,swiglu+cfin+qP --pairs swiglu+cfin:swiglu+cfin+qR,...
"""

from __future__ import annotations

import s14_cfin
from inlaid_worker.kernels import fused_norm

CLEAR_DEFAULT = fused_norm.CLEAR_MODE
CLEAR_VARIANTS = {"qR": 1, "qP": 2}
_base_variant = s14_cfin.variant


def variant(name: str) -> str:
    """fused_norm.CLEAR_MODE for a variant name (CLEAR_VARIANTS, else the default), then s14_cfin's variant."""
    parts = name.split("+")
    fused_norm.CLEAR_MODE = next((CLEAR_VARIANTS[p] for p in parts if p in CLEAR_VARIANTS), CLEAR_DEFAULT)
    return _base_variant("+".join("q" if p in CLEAR_VARIANTS else p for p in parts))


if __name__ == "__main__":
    s14_cfin.variant = variant  # s14_cfin.main hands its module's `variant` to s12_norm
    s14_cfin.main()
