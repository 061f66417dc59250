"""Session 12: Nsight Compute counters of quant_tcs (the TMA word ring) next to the shipped quant_tcg pick on the 7B up
weight at M = 4 and 16 (s11_ncu.py's harness and tables with other cases): are the consumer warpgroups' per-tile chains
(wait, words, dequantize, wgmma, wait) what the warps stall on?

Usage on the device: bash bench/kernels/s12_ncu.sh   (CPU: `python3 s12_ncu.py summary DETAILS_CSV RAW_CSV`)
"""

from __future__ import annotations

import s11_ncu

s11_ncu.CASES = {  # name: (M, QMMConfig fields: block_m, block_n, split_k, num_stages, kind)
    "tc2 m8 n128 s4 st4 M4 (before)": (4, (8, 128, 4, 4, "tc2")),
    "tcs m8 n128 s3 st4 M4 (shipped)": (4, (8, 128, 3, 4, "tcs")),
    "tcs m8 n128 s3 st8 M4": (4, (8, 128, 3, 8, "tcs")),
    "tcs m16 n128 s3 st4 M16 (shipped)": (16, (16, 128, 3, 4, "tcs")),
}

if __name__ == "__main__":
    s11_ncu.main()
