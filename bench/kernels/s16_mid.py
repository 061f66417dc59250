"""Session 16 (issue 4): quant_tcs's kinds at block_m 32 / 64 (tcs2a, tcsat; the tuner's _tcs plans of M buckets 32 and
64) against the shipped picks (quant_tcg "tc" / "tc2", quant_tcl "tcl") at M = 32 / 64 on the 7B (and 13B) decode
shapes, with session 12-14's harness (s13_tcs.py over s12_tcs.py / s8_gemv.py: each candidate checked PDL off and on
against the fp32 dequantized product, workspace clean; then timed iso / pdl over rotating weights, bf16 cuBLAS and copy
bandwidth in the same run; ship rows = best tcs candidate >= 3% faster than the shipped pick iso and pdl).

Env: S16_SHAPES (comma list of the names below; default the four 7B step shapes and 7B up), S16_MS (default 32,64).
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_mid.py {check,bench,report} --out DIR ...
"""

from __future__ import annotations

import os
import sys

# isort: off
import s13_tcs  # noqa: F401 - s13_tcs_dispatch first, then s8_gemv / s12_tcs as session 14 ran them
import s8_gemv as s8
import s12_tcs

# isort: on
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, _tcs

SHAPES = {
    "7B qkv 4096x12288": (4096, 12288),
    "7B o 4096x4096": (4096, 4096),
    "7B gate/up 4096x22016": (4096, 22016),
    "7B down 11008x4096": (11008, 4096),
    "7B up 4096x11008": (4096, 11008),
    "13B qkv 5120x15360": (5120, 15360),
    "13B o 5120x5120": (5120, 5120),
    "13B gate/up 5120x27648": (5120, 27648),
    "13B down 13824x5120": (13824, 5120),
}
DEFAULT = "7B qkv 4096x12288,7B o 4096x4096,7B gate/up 4096x22016,7B down 11008x4096,7B up 4096x11008"
s8.SHAPES = {k: SHAPES[k] for k in os.environ.get("S16_SHAPES", DEFAULT).split(",")}
s8.MS = tuple(int(v) for v in os.environ.get("S16_MS", "32,64").split(","))


def candidates(k: int, n: int, m: int) -> list[QMMConfig]:
    """The tuner's tcs plans of this M bucket (quant_matmul_config._tcs: block_m = the bucket) and the shipped pick."""
    out = _tcs(m, n, k, 128)
    old = s8.shipped(k, n, m)
    if old is not None and old not in out:
        out.append(old)
    return out


s8.candidates = candidates
s12_tcs.candidates = candidates

if __name__ == "__main__":
    sys.exit(s12_tcs.main())
