"""Session 13: s9_decode.py (two tuner tables alternating round by round on one runner) with s13_tcs_dispatch's routing
of the ACC_SCALE kinds (tcsa / tcs2a), which quant_matmul.py's dispatcher did not know yet (a record of what ran: it
routes them itself now; s13_tcs_dispatch only adds the bench-only tcs0).
Usage: as s9_decode.py (S9_TABLES=old=...,new=... INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels ...)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import s13_tcs_dispatch  # noqa: F401 - before the engine binds launch_quant_matmul

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).with_name("s9_decode.py"))
    runpy.run_path(sys.argv[0], run_name="__main__")
