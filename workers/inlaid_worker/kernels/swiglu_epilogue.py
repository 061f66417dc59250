"""SwiGLU in the gate/up GEMV's epilogue (the "swiglu" decode fusion): the half2 GEMV (quant_hgemvr) of the fused
gate/up weight [K, 2 I] writes act = silu(gate) * up [M, I] instead of gate_up, so no silu_mul launch.

Gate column j and up column I + j meet in one split-K reduction: the launch (quant_hgemvr, SWIGLU) maps program
(pid_n, pid_k) to the N tile pid_n of the gate half (pid_k even) or of the up half (pid_k odd), K split pid_k // 2.
Both halves' partial sums go into the shared split-K workspace (quant_common's protocol: fp32 atomics, one arrival
counter per tile pair, now counting 2 x split arrivals); the last to arrive reads and clears both halves with one
atomic exchange each, rounds each sum to the activation dtype (as the GEMV's y would be) and writes
act = silu(g) * u with silu_mul's rounding (silu in fp32 rounded to the activation dtype, then the product). So the
result is that of GEMV + silu_mul with the same config, up to the order in which the atomics add the partials (the
same freedom the split-K GEMV has), and the workspace and counters are left at zero (CUDA-graph safe). The
epilogue's dependency chain is the plain split-K one (one counter atomic): nothing waits on a second tile.
Needs I % BLOCK_N == 0 (quant_swiglu checks it).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def store_swiglu(acc, SCALE: tl.constexpr, offs_m, m_ok, offs_n, ws_ptr, N, cnt_ptr, pid_m, pid_n, SPLIT_K, act_ptr,
                 stride_am, INTER, BLOCK_N: tl.constexpr):  # fmt: skip
    """acc [BM, R, BN] (this program's partial of one half's tile, carrying 1/SCALE) into the workspace; the pair's
    last program writes act [BM, BN] of columns pid_n * BLOCK_N.. (module docstring)."""
    out = tl.sum(acc, axis=1, keep_dims=True) * SCALE  # [BM, 1, BN]
    mask = m_ok & (offs_n < N)  # full [BM, 1, BN] masks: atomics do not broadcast them (seen in the interpreter)
    tl.atomic_add(ws_ptr + offs_m * N + offs_n, out, mask=mask, sem="relaxed")
    tl.debug_barrier()  # every thread's partial before the (release) arrival
    tile = pid_m * tl.num_programs(0) + pid_n
    arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
    if arrived == SPLIT_K - 1:
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, None, :]
        g_ptrs = (ws_ptr + offs_m * N + cols).to(tl.pointer_type(tl.int32))
        zero = tl.zeros(out.shape, tl.int32)
        g_bits = tl.atomic_xchg(g_ptrs, zero, mask=mask, sem="relaxed")  # read + clear (quant_common.store_tile)
        u_bits = tl.atomic_xchg(g_ptrs + INTER, zero, mask=mask, sem="relaxed")
        dt = act_ptr.dtype.element_ty
        g = g_bits.to(tl.float32, bitcast=True).to(dt).to(tl.float32)  # gate_up's rounding
        u = u_bits.to(tl.float32, bitcast=True).to(dt).to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)  # silu rounded like F.silu (kernels.silu_mul)
        tl.store(act_ptr + offs_m * stride_am + cols, (act * u).to(dt), mask=mask)
        tl.store(cnt_ptr + tile, 0)
