"""Session 16b (issue 4): where quant_tcs's time goes at block_m 32 / 64. launch_tcs's diag modes (wrong results; time
only): 0 = the kernel, 1 = no x / scale / zero staging, 2 = no operand or MMA (staging + the ring), 3 = neither (the
ring's stream alone), at the session-16 picks' configs (M = 32 tcsat, 64 tcs2a; 128 columns, split 4, 4 stages), session 16's
staging (quant_tcs.X_CHUNK_16), iso and under PDL, rotating weights; bf16 cuBLAS beside them.
Usage (device): PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_big_diag.py OUT.json [WARM_INDEX]
"""

from __future__ import annotations

import json
import sys
import time

import torch
from bench_kernels import copies, gptq_bytes, random_gptq
from inlaid_worker.kernels import quant_tcs
from s16_big import _timed

POINTS = (("7B gate/up 4096x22016", 4096, 22016), ("7B up 4096x11008", 4096, 11008))
CFGS = ((32, "tcsat", 4), (64, "tcs2a", 4))  # (block_m = M, kind, split): the session-16 picks' kinds


def main() -> None:
    t0 = time.time()
    rows = []
    for name, k, n in POINTS:
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        for m, kind, split in CFGS:
            x = torch.randn(m, k, device="cuda").half()
            xb = x.bfloat16()
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            row = dict(shape=name, M=m, kind=kind, split=split, MB=gptq_bytes(ws[0]) / 1e6,
                       bf16_us=_timed([lambda w=w: xb @ w for w in wb], False))  # fmt: skip
            for d in (0, 1, 2, 3):
                fns = [lambda w=w, d=d: quant_tcs.launch_tcs(x, w, m, split, 4, 2, y, kind, diag=d) for w in ws]
                row[f"diag{d}"] = (_timed(fns, False), _timed(fns, True))
            rows.append(row)
            print(json.dumps(row), f"{time.time() - t0:.0f}s", flush=True)
            with open(sys.argv[1], "w") as f:
                json.dump(rows, f, indent=1)
        del ws, wb
        torch.cuda.empty_cache()


def warm(i: int) -> None:
    """Compile CFGS[i]'s four diag variants (Triton's disk cache: the timing process finds them)."""
    m, kind, split = CFGS[i]
    w = random_gptq(4096, 11008, 4, False)
    x = torch.randn(m, 4096, device="cuda").half()
    y = torch.empty(m, 11008, device="cuda", dtype=torch.float16)
    for d in (0, 1, 2, 3):
        quant_tcs.launch_tcs(x, w, m, split, 4, 2, y, kind, diag=d)
    torch.cuda.synchronize()


if __name__ == "__main__":
    warm(int(sys.argv[2])) if len(sys.argv) > 2 else main()
