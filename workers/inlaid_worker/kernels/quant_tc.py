"""Plain-Triton twin of the Gluon tensor-core kernel (quant_tcg): the same operand order and arithmetic, so
Triton's interpreter can check the order, the zero/scale handling and the split-K epilogue on the CPU.

Operand column idx = 32 wi + 8 s + 2 t + e of a K=128 tile holds nibble s + 4e of word 4t + wi, i.e. tile row
kk = 32 t + 8 wi + 4 e + s (quant_tcg's docstring says why: it is the wgmma A fragment of the words as they
are loaded); x is loaded in the same order. Per element: (MAGIC + q) - (MAGIC + z) exactly in 16 bits, then
either times s in 16 bits (FULL_DEQUANT, one accumulator) or the tile's product times s in fp32.
3-bit weights (BITS = 3, fp16): quant_tc3.operand3, the same bit steps as the Gluon operand PTX, with x read
through quant_tc3.x_index3 (the 3-bit operand order, act-order composed in).
On CUDA this kernel is correct but slow (its reshape sends the operand through shared memory); production
uses quant_tcg there.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .quant_common import group_zero, split_launch, store_tile
from .quant_matmul_config import TCL_KINDS
from .quant_tc3 import operand3, x_index3


@triton.jit
def _tc_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn,
    stride_ym, stride_yn,
    GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr, IS_BF16: tl.constexpr, FULL_DEQUANT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BITS: tl.constexpr = 4,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    MAGIC2: tl.constexpr = 0x43004300 if IS_BF16 else 0x64006400
    MAGIC: tl.constexpr = 0x4300 if IS_BF16 else 0x6400
    dt = x_ptr.dtype.element_ty
    wi = tl.arange(0, 4)
    t = tl.arange(0, 4)
    sh = tl.arange(0, 4) * 4
    idx = tl.arange(0, BLOCK_K)
    kk = 32 * ((idx // 2) % 4) + 8 * (idx // 32) + 4 * (idx % 2) + (idx // 8) % 4  # tile row of operand column
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for it in range(0, ITERS):
        kt = pid_k * (ITERS * BLOCK_K) + it * BLOCK_K
        k_ok = kt < K
        k0 = tl.where(k_ok, kt, 0)
        xk = k0 + kk
        if HAS_PERM:
            xk = tl.load(perm_ptr + xk)
        xt = tl.load(x_ptr + offs_m[None, :] * stride_xm + xk[:, None] * stride_xk,
                     mask=mask_m[None, :] & k_ok, other=0.0)  # [BK, BM]  # fmt: skip
        g = k0 // GROUP
        s = tl.load(sc_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0).to(dt)
        if BITS == 3:
            z3 = group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, 3, SYM, ZERO_OFFSET, BLOCK_N)
            w5 = operand3(qw_ptr, offs_n, mask_n, k0, stride_qk, stride_qn, z3.to(tl.int32), BLOCK_N)
        else:
            row = k0 // 8 + 4 * t[None, None, :] + wi[None, :, None]
            p = tl.load(qw_ptr + offs_n[:, None, None] * stride_qn + row * stride_qk, mask=mask_n[:, None, None],
                        other=0)  # fmt: skip
            z = (group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, 4, SYM, ZERO_OFFSET, BLOCK_N)
                 .to(tl.int32) + MAGIC)  # fmt: skip
            pairs = ((p[:, :, None, :] >> sh[None, None, :, None]) & 0x000F000F) | MAGIC2  # [BN, wi, s, t]
            lo = (pairs & 0xFFFF).to(tl.int16).to(dt, bitcast=True)
            hi = ((pairs >> 16) & 0xFFFF).to(tl.int16).to(dt, bitcast=True)
            zf = z.to(tl.int16).to(dt, bitcast=True)[:, None, None, None]
            w5 = tl.join(lo - zf, hi - zf)  # [BN, wi, s, t, e]: exact in 16 bits
        w = tl.reshape(w5, (BLOCK_N, BLOCK_K))
        if FULL_DEQUANT:
            acc = tl.dot(w * s[:, None], xt, acc)
        else:
            acc += tl.dot(w, xt) * s.to(tl.float32)[:, None]

    tile = pid_m * tl.num_programs(0) + pid_n
    mask = mask_n[:, None] & mask_m[None, :]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None] * stride_yn
    ws_ptrs = ws_ptr + offs_m[None, :] * N + offs_n[:, None]
    store_tile(acc, y_ptrs, ws_ptrs, mask, cnt_ptr, tile, SPLIT_K, USE_SPLIT)


def launch_tc(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, split_k: int, full: bool,
              y: torch.Tensor) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W, K tiles of 128 (4-bit, or 3-bit fp16; K and group multiples of 128)."""
    block_k = 128
    if w.bits not in (3, 4) or w.group_size % block_k or x2.shape[1] % block_k:
        raise ValueError("the tensor-core kernel takes 3- or 4-bit weights with K and group multiples of 128")
    if w.bits == 3 and x2.dtype != torch.float16:
        raise ValueError("the 3-bit tensor-core operand is fp16 only")
    grid, args, consts = split_launch(x2, w, y, block_m, block_n, block_k, split_k)
    if w.bits == 3:  # x read through the index of the 3-bit operand order (act-order composed in)
        args = (*args[:4], x_index3(x2.shape[1], w.perm, x2.device), *args[5:])
        consts["HAS_PERM"] = True
    _tc_kernel[grid](*args, **consts, IS_BF16=x2.dtype == torch.bfloat16, FULL_DEQUANT=full, BLOCK_M=block_m,
                     BLOCK_N=block_n, BLOCK_K=block_k, BITS=w.bits, num_warps=4)  # fmt: skip


def launch_tensor_core(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
                       num_warps: int, num_stages: int, y: torch.Tensor, kind: str) -> None:  # fmt: skip
    """Kinds "tc", "tcf" (FULL_DEQUANT), "tc2", "tcf2" (the operand built in two K=64 halves): the Gluon kernel on
    CUDA (num_stages = its word prefetch depth in K tiles), this file's twin under the interpreter; block_k = 128.
    "tcl", "tclp", "tcls": the large-M tile kernel (quant_tcl; num_stages = its cp.async ring depth); its twin is "tcf".
    sm_90 only on CUDA: launch_quant_matmul, the caller, refuses other GPUs first (device_caps.need_sm90)."""
    full = kind.startswith("tcf") or kind.startswith("tcl")
    if block_k != 128:
        raise ValueError("the tensor-core kernels use K tiles of 128")
    if x2.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        from .quant_tcg import launch_tcg

        if kind.startswith("tcl"):
            from .quant_tcl import launch_tcl

            launch_tcl(x2, w, block_m, block_n, split_k, num_warps, num_stages, TCL_KINDS.index(kind), y)
        else:
            launch_tcg(x2, w, block_m, block_n, split_k, num_warps, num_stages, full, 2 if kind.endswith("2") else 1, y)
    else:
        launch_tc(x2, w, block_m, block_n, split_k, full, y)
