"""AutoGPTQ's own packing loop (QuantLinear.pack), verbatim in spirit: the independent oracle of the GPTQ bit layout
that quant.pack and kernels.gptq_packing are checked against."""

from __future__ import annotations

import numpy as np


def autogptq_pack(iw: np.ndarray, bits: int) -> np.ndarray:
    """iw: [K, N] uint32 values below 2**bits (K a multiple of 32) -> the packed [K / 32 * bits, N] uint32 words."""
    q = np.zeros((iw.shape[0] // 32 * bits, iw.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < q.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                q[row] |= iw[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i))
            i += 10
            q[row] |= iw[i] << 30
            row += 1
            q[row] |= (iw[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i) + 1)
            i += 10
            q[row] |= iw[i] << 31
            row += 1
            q[row] |= (iw[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                q[row] |= iw[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return q
