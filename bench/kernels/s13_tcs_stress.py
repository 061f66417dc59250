"""Session 13: repeated launches of quant_tcs kinds on the 7B decode shapes, every launch's error against the fp32
dequantized product and the split-K workspace checked after every back-to-back pair (s12_stress.py's loop), worst error
per config and M, failures = error above S13_TOL or a dirty workspace.

Modes (env S13_STRESS):
  acc    (default) the ACC_SCALE kinds (S13_ACC_KINDS, default tcsa,tcs2a) at the plans the bench times (n128, 4
         stages; splits 3 / 4 / 8; the tuner offers split 2 too now)
  s12    tcs2's unexplained 4.95e-3 (kernels-2026-11-30-s12-tcs2.md): that check's 18 candidates with its exact inputs
         (weights: seed 0 per shape; x: seed M, fp16), REPS launches each PDL off and on, every error recorded
Usage: [S13_STRESS=s12] PYTHONPATH=workers:bench/kernels python3 bench/kernels/s13_tcs_stress.py [REPS] > log
"""

from __future__ import annotations

import json
import os
import sys
import time

import s13_tcs_dispatch  # noqa: F401 - routed tcsa / tcs2a then; now only tcs0 (quant_matmul routes the others)
import torch
from bench_kernels import random_gptq, rel_err
from inlaid_worker.kernels import pdl, quant_common
from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig
from s12_stress import dirty

SHAPES = ((4096, 22016), (11008, 4096), (4096, 11008))
TOL = float(os.environ.get("S13_TOL", "1e-3"))
KINDS_ACC = tuple(os.environ.get("S13_ACC_KINDS", "tcsa,tcs2a").split(","))


def acc_cases() -> list[tuple[int, int, QMMConfig]]:
    out = []
    for k, n in SHAPES:
        for bm in (8, 16):
            for s in (3, 4, 8):
                programs = -(-n // 128) * s
                if 128 <= programs <= 1100:
                    out += [(k, n, QMMConfig(bm, 128, 128, s, 4, 4, True, kd)) for kd in KINDS_ACC]
    return out


# the 18 checked candidates of kernels-2026-11-30-s12-tcs2.md: (K, N, M, cfg)
_OLD = {  # the shipped picks at that run's HEAD (its "before" column)
    (4096, 22016, 4): QMMConfig(8, 64, 128, 4, 4, 4, True, "tc2"),
    (4096, 22016, 8): QMMConfig(8, 64, 128, 4, 4, 4, True, "tc2"),
    (4096, 22016, 16): QMMConfig(16, 128, 128, 3, 4, 4, True, "tcs"),
    (11008, 4096, 4): QMMConfig(8, 128, 128, 8, 4, 4, True, "tcs"),
    (11008, 4096, 8): QMMConfig(8, 128, 128, 8, 4, 4, True, "tcs"),
    (11008, 4096, 16): QMMConfig(16, 64, 128, 8, 4, 1, True, "tc"),
}


def s12_cases() -> list[tuple[int, int, int, QMMConfig]]:
    out = []
    for (k, n, m), old in _OLD.items():
        bm = 8 if m <= 8 else 16
        for s in (3, 4, 8):
            if 128 <= -(-n // 128) * s <= 1100:
                out.append((k, n, m, QMMConfig(bm, 128, 128, s, 4, 4, True, "tcs2")))
        out.append((k, n, m, old))
    return out


def run_pair(x: torch.Tensor, w, c: QMMConfig, mode: int) -> tuple[float, dict | None]:  # noqa: ANN001
    y = torch.empty(x.shape[0], w.out_features, dtype=x.dtype, device="cuda")
    with pdl.scope(mode):
        launch_quant_matmul(x, w, c, y)
        launch_quant_matmul(x, w, c, y)  # back to back: the second overlaps the first under PDL
    return rel_err(x, w, y), dirty()


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    t0 = time.time()
    if os.environ.get("S13_STRESS", "acc") == "s12":
        weights: dict = {}
        for k, n, m, c in s12_cases():
            if (k, n) not in weights:
                weights.clear()
                quant_common._WORKSPACES.clear()
                torch.manual_seed(0)
                weights[(k, n)] = random_gptq(k, n, 4, False)
            w = weights[(k, n)]
            torch.manual_seed(m)
            x = torch.randn(m, k, device="cuda").half()
            errs, fails = [], []
            for mode in (0, 1):
                for _ in range(reps):
                    err, d = run_pair(x, w, c, mode)
                    errs.append(err)
                    if d is not None or not err < TOL:
                        fails.append(dict(pdl=mode, err=err, dirty=d))
                        quant_common._WORKSPACES.clear()
            print(json.dumps(dict(mode="s12", K=k, N=n, M=m, cfg=str(c), runs=len(errs), fails=len(fails),
                                  worst=max(errs), best=min(errs), first=fails[:3])),
                  f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
        return
    for k, n, c in acc_cases():
        torch.manual_seed(0)
        w = random_gptq(k, n, 4, False)
        worst: dict[int, float] = {}
        fails = []
        runs = 0
        for m in (1, 4, 8) if c.block_m == 8 else (9, 16):
            x = torch.randn(m, k, device="cuda").half()
            for mode in (0, 1):
                for _ in range(reps):
                    err, d = run_pair(x, w, c, mode)
                    runs += 1
                    worst[m] = max(worst.get(m, 0.0), err)
                    if d is not None or not err < TOL:
                        fails.append(dict(M=m, pdl=mode, err=err, dirty=d))
                        quant_common._WORKSPACES.clear()
        print(json.dumps(dict(mode="acc", K=k, N=n, cfg=str(c), runs=runs, fails=len(fails), worst=worst,
                              first=fails[:3])), f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
        del w
        quant_common._WORKSPACES.clear()


if __name__ == "__main__":
    main()
