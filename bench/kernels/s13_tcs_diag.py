"""Session 13: attribute the sporadic ~1e-3..5e-3 errors of quant_tcs (tcs2 in session 12's check; tcsa m16 n128
split 4 on 7B gate/up 4096x22016 at M = 16 in s13's stress, 10 of 16 pairs). Single launches (y preset to NaN,
PDL off / on), after each: the error vs the fp32 dequantized product, the split-K workspace / counters clean, and for
a wrong result where it is wrong: the 64-column warpgroup tiles and rows hit, and whether the difference is one K
split's partial product (-1: a split missing from the sum, +1: one counted twice) or something else (a compute race).
Usage: [S13_DIAG_CASES=0,2] PYTHONPATH=workers:bench/kernels python3 bench/kernels/s13_tcs_diag.py [REPS] > log
(one JSON line a case and kind)
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
from inlaid_worker.kernels.quant_matmul import dequantize_gptq, launch_quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig
from s12_stress import dirty

CASES = [  # (K, N, M, block_m, split)
    (4096, 22016, 16, 16, 4),  # the failing one
    (4096, 22016, 16, 16, 3),  # shipped shape/plan of gate/up M = 16
    (4096, 11008, 16, 16, 4),  # the same plan on up (N halved)
    (4096, 22016, 8, 8, 4),
    (11008, 4096, 16, 16, 8),  # 7B down M = 16 (one such check error in s13's second run)
]
KINDS = tuple(os.environ.get("S13_DIAG_KINDS", "tcs0,tcs,tcsa,tcs2,tcs2a").split(","))


def explain(x: torch.Tensor, w, y: torch.Tensor, split: int) -> dict:  # noqa: ANN001
    groups = (torch.arange(w.in_features, device="cuda") // w.group_size).int()
    dense = dequantize_gptq(w.qweight, w.qzeros, w.scales, groups, w.bits, w.zero_offset).float()
    ref = x.float() @ dense
    d = y.float() - ref
    tol = 1e-2 * ref.abs().mean()
    bad = (d.abs() > tol) | ~torch.isfinite(y.float())
    rows, cols = bad.nonzero(as_tuple=True)
    out: dict = dict(bad=int(bad.sum()), nan=int((~torch.isfinite(y.float())).sum()))
    if not out["bad"]:
        return out
    out["rows"] = sorted(set(rows.tolist()))[:16]
    tiles = sorted(set((cols // 64).tolist()))
    out["wg_tiles"] = tiles[:12]
    out["n_wg_tiles"] = len(tiles)
    k_tiles = w.in_features // 128
    iters = -(-k_tiles // split)
    best = None
    for s in range(split):
        sl = slice(s * iters * 128, min((s + 1) * iters * 128, w.in_features))
        part = x.float()[:, sl] @ dense[sl]
        for sign in (-1.0, 1.0):
            r = float(((d - sign * part)[bad]).norm() / d[bad].norm())
            if best is None or r < best[0]:
                best = (r, s, sign)
    out["split_fit"] = dict(resid=round(best[0], 4), split=best[1], sign=best[2])
    # per 128-row K tile: does the difference look like one K tile's product of those columns?
    c0 = int(cols[0])
    col = slice((c0 // 64) * 64, (c0 // 64) * 64 + 64)
    dc = d[:, col]
    fits = []
    for t in range(k_tiles):
        sl = slice(t * 128, (t + 1) * 128)
        pt = x.float()[:, sl] @ dense[sl, col]
        for sign in (-1.0, 1.0):
            fits.append((float((dc - sign * pt).norm() / dc.norm()), t, sign))
    f = min(fits)
    out["tile_fit"] = dict(resid=round(f[0], 4), k_tile=f[1], sign=f[2], cols=[col.start, col.stop])
    out["example"] = [round(float(v), 5) for v in d[rows[:4], cols[:4]].tolist()]
    return out


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    t0 = time.time()
    pick = os.environ.get("S13_DIAG_CASES")
    cases = [CASES[int(i)] for i in pick.split(",")] if pick else CASES
    for k, n, m, bm, split in cases:
        torch.manual_seed(0)
        w = random_gptq(k, n, 4, False)
        x = torch.randn(m, k, device="cuda").half()
        for kind in KINDS:
            c = QMMConfig(bm, 128, 128, split, 4, 4, True, kind)
            rec: dict = dict(K=k, N=n, M=m, cfg=str(c), runs=0, bad=0, dirty=0, errs=[], events=[])
            for mode in (0, 1):
                for _ in range(reps):
                    y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                    with pdl.scope(mode):
                        launch_quant_matmul(x, w, c, y)
                    torch.cuda.synchronize()
                    rec["runs"] += 1
                    err = rel_err(x, w, y)
                    dd = dirty()
                    if dd is not None:
                        rec["dirty"] += 1
                        quant_common._WORKSPACES.clear()
                    if not err < 1e-3 or dd is not None:
                        rec["bad"] += 1
                        if len(rec["events"]) < 4:
                            rec["events"].append(dict(pdl=mode, err=err, dirty=dd, **explain(x, w, y, split)))
                    rec["errs"].append(round(err, 6))
            rec["worst"] = max(rec["errs"])
            rec["errs"] = sorted(set(rec["errs"]))[-6:]
            print(json.dumps(rec), f"{time.time() - t0:.0f}s", flush=True)
        del w
        quant_common._WORKSPACES.clear()


if __name__ == "__main__":
    main()
