"""Session 13: offline sm_90 build of quant_tcs (no GPU) with the ACC_SCALE switch (kinds tcsa / tcs2a): registers,
spills, shared memory, the consumer K loop's SASS instruction count (and its instruction mix), wgmma serialization
warnings. A CLI over sass_tcs.build / sass_tcs.loop_mix with session 13's argument order (SPLIT is build's USE_SPLIT
flag; the build and the mix are sass_tcs's).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s13_tcs_sass.py \
    "BM,STAGES,NWG,ITERS,SPLIT,PIPE,ACC[,BF16,EARLY]" ...
"""

from __future__ import annotations

import sys

from sass_tcl import analyse
from sass_tcs import build, loop_mix


def build13(bm: int, stages: int, nwg: int, iters: int, split: int = 1, pipe: int = 0, acc: int = 0,
            bf16: int = 0, early: int = 0) -> dict:  # fmt: skip
    """sass_tcs.build in session 13's argument order."""
    return build(bm, stages, nwg, iters, split, pipe=pipe, acc=acc, bf16=bf16, early=early)


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            asm = build13(*cfg)
            res = analyse(asm)
            res["mix"] = loop_mix(asm)
            print(cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
