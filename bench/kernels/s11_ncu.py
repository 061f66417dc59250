"""Session 11: Nsight Compute counters of quant_tcv (kinds tcv / tcv2) next to the shipped quant_tcg picks on the 7B
up weight (K 4096, N 11008) at M = 4, 8, 16: one launch each under `ncu --profile-from-start off` (tma_ncu.py's
harness, its summary and stall tables). Why does a kernel with half the SASS instructions a word not run faster?

Usage on the device: bash bench/kernels/s11_ncu.sh   (CPU: `python3 s11_ncu.py summary DETAILS_CSV RAW_CSV`)
"""

from __future__ import annotations

import sys
from pathlib import Path

import tma_ncu

CASES = {  # name: (M, QMMConfig fields: block_m, block_n, split_k, num_stages, kind)
    "tc2 m8 n128 s4 st4 M4 (shipped)": (4, (8, 128, 4, 4, "tc2")),
    "tcv m8 n64 s16 st2 M4": (4, (8, 64, 16, 2, "tcv")),
    "tcv m8 n128 s4 st4 M4 (ring)": (4, (8, 128, 4, 4, "tcv")),
    "tc2 m8 n128 s4 st4 M8 (shipped)": (8, (8, 128, 4, 4, "tc2")),
    "tcv m8 n64 s4 st2 M8": (8, (8, 64, 4, 2, "tcv")),
    "tcv m8 n128 s4 st4 M8 (ring)": (8, (8, 128, 4, 4, "tcv")),
    "tc2 m16 n128 s4 st4 M16 (shipped)": (16, (16, 128, 4, 4, "tc2")),
    "tcv m16 n64 s4 st2 M16": (16, (16, 64, 4, 2, "tcv")),
}


def run_cases() -> None:
    import torch
    from gemv_h200 import make_weight
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    k, n = 4096, 11008
    w = make_weight(k, n, 4, False)
    for name, (m, (bm, bn, split, stages, kind)) in CASES.items():
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        y = torch.empty(m, n, dtype=torch.float16, device="cuda")
        cfg = QMMConfig(bm, bn, 128, split, 4, stages, True, kind)
        try:
            launch_quant_matmul(x, w, cfg, y)  # compile + warm
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            launch_quant_matmul(x, w, cfg, y)
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            print("ran", name, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported
            print("FAILED", name, repr(exc)[:300], flush=True)


def main() -> None:
    if sys.argv[1] == "run":
        run_cases()
    elif sys.argv[1] == "summary":  # summary DETAILS_CSV RAW_CSV
        names = list(CASES)
        print(tma_ncu.summary(Path(sys.argv[2]), names))
        print()
        print(tma_ncu.stalls(Path(sys.argv[3]), names))


if __name__ == "__main__":
    main()
