"""Session 13: quant_tcs's ACC_SCALE kinds ("tcsa": the exact (q - z) operand, the scale on the fp32 accumulator, one
shift a word in fp16; "tcs2a": the same with tcs2's half-tile wgmmas) against "tcs" (the shipped kind) and the shipped
picks, with session 12's harness (s12_tcs.py over s8_gemv.py: each candidate checked PDL off and on, then timed iso /
pdl over rotating weights, bf16 cuBLAS and copy bandwidth in the same run). The new kinds reach launch_quant_matmul
through s13_tcs_dispatch (benches only). (A record of what ran. Now: quant_matmul's dispatcher routes tcsa / tcs2a
itself, s13_tcs_dispatch only adds the bench-only tcs0, and the tuner offers tcs2a with splits 2 / 3 / 4 / 8.)

Env: S13_SHAPES (default the three 7B shapes of the shipped tcs picks: up 4096x11008, gate/up 4096x22016, down
11008x4096), S13_MS (default 4,8,16); s12_tcs.py's S12_PLANS / S12_SPLITS / S12_KIND / S12_CHAINS as there.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s13_tcs.py {check,bench,report} --out DIR ...
"""

from __future__ import annotations

import os
import sys

# isort: off
import s13_tcs_dispatch  # noqa: F401 - first: routes tcs0 (tcsa / tcs2a then) before launch_quant_matmul is bound
import s8_gemv as s8

# isort: on

ALL_SHAPES = dict(s8.SHAPES)  # before s12_tcs narrows them
import s12_tcs  # noqa: E402

DEFAULT_SHAPES = "7B up 4096x11008,7B gate/up 4096x22016,7B down 11008x4096"
s8.SHAPES = {k: v for k, v in ALL_SHAPES.items() if k in os.environ.get("S13_SHAPES", DEFAULT_SHAPES).split(",")}
s8.MS = tuple(int(v) for v in os.environ.get("S13_MS", "4,8,16").split(","))

if __name__ == "__main__":
    sys.exit(s12_tcs.main())
