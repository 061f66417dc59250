"""Weight-only int4/int3 GEMM and GEMV (Triton) on the standard GPTQ layout: dispatcher, torch reference.

Kernels (chosen per shape and batch bucket by the tuner in quant_matmul_config):
- "gemv" (quant_gemv): CUDA-core FMAs with exact magic-number unpacking, for M <= 4, 4- and 3-bit;
- "hgemv" (quant_hgemv): half2 dequantize + dot in inline PTX, 4-bit, fp16 x, M <= 16 (weights read once per
  BLOCK_M rows); "hgemvp": the same kernel with x, scales, zeros and words loaded 1-2 K tiles ahead (M <= 4);
- "hgemvr", "hgemvrq", "hgemvrb" (quant_hgemvr, v7): half2 GEMV summing a thread's row chunks of a K tile in
  half2, one fp32 conversion per tile; "q" pins the next tile's loads, "b" loads all of a program's tiles at once;
  "hgemvrf", "hgemvrqf", "hgemvrbf": the same with the finish epilogue (red-only partials, then
  quant_common.finish_rows writes y and clears the workspace: no arrival counter, one more small kernel);
- "hgemv3" (quant_hgemv3): the half2 GEMV for 3-bit weights (a word triple -> 16 half2 pairs), M <= 4;
- "mma" (quant_mma): tensor cores with the weight as the A operand (y^T = W^T x^T), 4-bit, any M;
- "tc", "tc2", "tcf2" (quant_tcg, Gluon; quant_tc under the interpreter): tensor cores, words loaded straight
  into the wgmma operand registers, 4- and 3-bit (quant_tc3), M >= 3 (the winner at M = 8..32 on the H200);
- "tcv", "tcv2" (quant_tcv, Gluon; quant_tc under the interpreter): the small-M tensor-core GEMV with 8/16-byte
  word loads straight into the operand (MMA rows mapped to adjacent columns), x, scales and zeros staged once per
  program, one shift a word; 4-bit, M = 2..8 in the tuner, N a multiple of BLOCK_N (not faster than tc2 / hgemvr
  on the H200 but at a few points: session 11);
- "tcl", "tclp", "tcls" (quant_tcl, Gluon): the large-M tile GEMM (each word dequantized once per 64-128 rows of
  x, x put into the operand's K order once per call, or given in that order: launch_tcl_kind's xp), 4- and 3-bit,
  M >= 64;
- "tcw", "tcwn", "tcwx" (quant_tcw, Gluon; quant_tc "tcf" under the interpreter): warp-specialized large-M GEMM (TMA
  producer warp, two consumer warpgroups of 64 columns; with / without ping-pong turns, "x": atomic split-K), 4-bit,
  M >= 256;
- "tcs", "tcss", "tcsa", "tcs2", "tcs2a", "tcs2ao", "tcs2at", "tcsat" (quant_tcs, Gluon): small-M GEMV with
  quant_tcw's structure (a TMA producer warp keeps a deep ring of word tiles in flight, 1-2 consumer warpgroups of
  64 columns, x staged once per program); "2": PIPE (half-tile wgmmas under the next half's dequantization), "a":
  ACC_SCALE (exact (q - z) operand, fp32 group scale on each K tile's result), "o" / "t": where the scales and zeros
  come from (quant_tcs.SZ_MODES: "o" staged after the x loads, "t" rows TMA-copied by the producer; g128 and
  N % 32 == 0 only). The tuner offers "tcs2a" (session 13) and "tcsat" (session 14) at M = 2..16 and (session
  16, block_m 32 / 64) M = 17..64, and the H200 table ships both (speed-ups in quant_tcs's docstring); "tcs",
  "tcss", "tcs2", "tcsa", "tcs2ao" and "tcs2at" are bench kinds. Every "tc*" kind is sm_90 only
  (quant_matmul_config.hopper_only): other GPUs never get them as candidates and launch_quant_matmul refuses them
  (device_caps.need_sm90);
- "tcsx", "tcsx2" (quant_tcsx, Gluon, session 17): quant_tcs's ACC_SCALE K loop ("2": tcs2a's half-tile PIPE) with x
  streamed through the TMA word ring a K tile at a time from an operand-ordered copy of x (a pre-pass inside the
  call), so shared memory is only the ring and splits of 1-2 fit; 4-bit, M = 17..256 in the tuner (buckets 32 / 64 /
  128 / 256, quant_matmul_config.TCSX_PLANS), quant_tc "tc" under the interpreter;
- "tcsxk", "tcsxks" (quant_tcsxk, Gluon, session 19): tcsx's K loop on a persistent stream-K grid (one wave; tiles
  shared between programs are summed by fp32 atomics, "s": per-program slots), bucket 256
  (quant_matmul_config.TCSXK_PLANS); the H200 table picks them for 13B down and gate/up at M = 256;
- "dequant" (quant_mma): dequantize to a dense fp16/bf16 scratch and call cuBLAS, for large M;
- "tile" (below, v1/v2): [BLOCK_M, BLOCK_N] tiles over a reshaped unpacked tile; kept for 3-bit with bf16 x or K not a multiple of 128.
All keep K tiles inside one quantization group and share the self-cleaning split-K epilogue
(quant_common.store_tile). The "tile" kernel removes zero and magic per group with the row sums of x:
    sum_k x[k] * (q[k] - z) * s  ==  s * (dot(x, magic + q) - (magic + z) * sum_k x[k]).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from .device_caps import need_sm90
from .gptq_packing import GPTQWeight, unpack_bitstream
from .quant_common import bucket_workspace, group_zero, split_iters, store_tile
from .quant_gemv import launch_gemv
from .quant_hgemv import launch_hgemv
from .quant_hgemv3 import launch_hgemv3
from .quant_hgemvr import launch_hgemvr
from .quant_matmul_config import (
    TCL_KINDS,
    TCS_ACC_KINDS,
    TCS_KINDS,
    TCSX_KINDS,
    QMMConfig,
    agrees,
    candidate_configs,
    hopper_only,
    pick_config,
)
from .quant_mma import dequant_matmul, launch_mma
from .quant_tc import launch_tensor_core

HGEMVR_KINDS = ("hgemvr", "hgemvrq", "hgemvrb", "hgemvrf", "hgemvrqf", "hgemvrbf")
XP_KINDS = (*TCSX_KINDS, *TCL_KINDS)  # the kinds that can take an operand-ordered x (launch_xp_kind)


@triton.jit
def _unpack_rows(qw_ptr, k0, offs_n, mask_n, stride_qk, stride_qn, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Quantized values of rows k0..k0+BLOCK_K as uint32 [BLOCK_K, BLOCK_N]."""
    if BITS == 4:
        offs_r = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        ptrs = qw_ptr + offs_r[:, None] * stride_qk + offs_n[None, :] * stride_qn
        packed = tl.load(ptrs, mask=mask_n[None, :], other=0).to(tl.uint32, bitcast=True)
        shifts = (tl.arange(0, 8) * 4).to(tl.uint32)
        q = (packed[:, None, :] >> shifts[None, :, None]) & 0xF  # [BK/8, 8, BN]: row k0 + 8*i + j
        q = tl.reshape(q, (BLOCK_K, q.shape[2]))
    else:  # 3 bits: a bit stream that crosses word boundaries
        bit = tl.arange(0, BLOCK_K) * 3
        word = (k0 // 32) * 3 + bit // 32
        sh = (bit % 32).to(tl.uint32)
        lo = tl.load(qw_ptr + word[:, None] * stride_qk + offs_n[None, :] * stride_qn, mask=mask_n[None, :], other=0)
        straddle = (bit % 32) > 29
        hi = tl.load(
            qw_ptr + (word + 1)[:, None] * stride_qk + offs_n[None, :] * stride_qn,
            mask=straddle[:, None] & mask_n[None, :],
            other=0,
        )
        lo = lo.to(tl.uint32, bitcast=True)
        hi = hi.to(tl.uint32, bitcast=True)
        q = ((lo >> sh[:, None]) | (hi << ((32 - sh) & 31)[:, None])) & 0x7
    return q


@triton.jit
def _qmm_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn,
    stride_ym, stride_yn,
    BITS: tl.constexpr, GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr, IS_BF16: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # (q | MAGIC_BITS) as a 16-bit float is exactly MAGIC + q
    MAGIC_BITS: tl.constexpr = 0x4300 if IS_BF16 else 0x6400
    MAGIC: tl.constexpr = 128.0 if IS_BF16 else 1024.0

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # every split runs ITERS tiles; tiles past K (last split only) are masked to contribute zero
    for i in range(0, ITERS):
        kt = pid_k * (ITERS * BLOCK_K) + i * BLOCK_K
        k_ok = kt < K
        k0 = tl.where(k_ok, kt, 0)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        if HAS_PERM:
            xk = tl.load(perm_ptr + offs_k)
        else:
            xk = offs_k
        x_mask = mask_m[:, None] & k_ok
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + xk[None, :] * stride_xk, mask=x_mask, other=0.0)
        q = _unpack_rows(qw_ptr, k0, offs_n, mask_n & k_ok, stride_qk, stride_qn, BITS, BLOCK_K)
        if USE_DOT:
            w = (q | MAGIC_BITS).to(tl.int16).to(x.dtype, bitcast=True)  # [BK, BN] = MAGIC + q
            d = tl.dot(x, w)  # [BM, BN] fp32
            z_magic = MAGIC
        else:  # GEMV (M <= 4): CUDA-core FMAs, no tensor-core layout shuffles
            d = tl.sum(x.to(tl.float32)[:, :, None] * q.to(tl.float32)[None, :, :], axis=1)
            z_magic = 0.0
        xs = tl.sum(x.to(tl.float32), axis=1)  # [BM]
        g = k0 // GROUP
        s = tl.load(sc_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
        z = group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, BITS, SYM, ZERO_OFFSET, BLOCK_N) + z_magic
        acc += (d - xs[:, None] * z[None, :]) * s[None, :]

    mask = mask_m[:, None] & mask_n[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    ws_ptrs = ws_ptr + offs_m[:, None] * N + offs_n[None, :]
    store_tile(acc, y_ptrs, ws_ptrs, mask, cnt_ptr, pid, SPLIT_K, USE_SPLIT)


def tile_args(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor) -> tuple[tuple, tuple, dict]:
    """(grid, positional args, keyword args) of the v1/v2 kernel's launch (_launch_tile)."""
    m, k = x2.shape
    n = w.out_features
    iters, split = split_iters(k // cfg.block_k, cfg.split_k)
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n)
    ws, cnt = bucket_workspace(x2.device, m, n, triton.cdiv(n, cfg.block_n), cfg.block_m) if split > 1 else (y, y)
    perm = w.perm if w.perm is not None else w.qweight
    # 3-bit tiles are gathered word by word: deep pipelines of big tiles overflow shared memory
    stages = min(cfg.num_stages, 2) if w.bits == 3 and cfg.block_m * cfg.block_n >= 64 * 128 else cfg.num_stages
    args = (
        x2, w.qweight, w.scales, w.qzeros, perm, y, ws, cnt,
        m, n, k, w.qzeros.shape[1], iters, split,
        x2.stride(0), x2.stride(1), w.qweight.stride(0), w.qweight.stride(1),
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1),
        y.stride(0), y.stride(1),
    )  # fmt: skip
    consts = dict(BITS=w.bits, GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset,
                  HAS_PERM=w.perm is not None, USE_SPLIT=split > 1, IS_BF16=x2.dtype == torch.bfloat16,
                  USE_DOT=cfg.use_dot, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                  num_warps=cfg.num_warps, num_stages=stages)  # fmt: skip
    return (tiles, split), args, consts


def _launch_tile(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor) -> None:
    """The v1/v2 kernel: [BLOCK_M, BLOCK_N] tiles, tl.dot or CUDA-core FMAs on reshaped unpacked tiles."""
    grid, args, consts = tile_args(x2, w, cfg, y)
    _qmm_kernel[grid](*args, **consts)


def launch_quant_matmul(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor) -> None:
    """Run one kernel with an explicit config: y[M, N] = x2[M, K] @ W (cfg.kind picks the kernel)."""
    if hopper_only(cfg.kind):
        need_sm90(x2.device, cfg.kind)  # the Gluon kinds: refused before compiling (LLVM aborts elsewhere)
    args = (cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, cfg.num_stages, y)
    if cfg.kind == "gemv":
        launch_gemv(x2, w, *args)
    elif cfg.kind == "hgemv":
        launch_hgemv(x2, w, *args)
    elif cfg.kind == "hgemvp":  # the v5 look-ahead variant: num_stages is the look-ahead depth
        launch_hgemv(x2, w, *args[:5], 1, y, ahead=cfg.num_stages)
    elif cfg.kind == "hgemvb":  # v6: all of a program's 2-4 K tiles loaded before any is used
        launch_hgemv(x2, w, *args[:5], 1, y, burst=True)
    elif cfg.kind in HGEMVR_KINDS:  # v7 row-accumulating half2 GEMV (quant_hgemvr); "f": finish-kernel epilogue
        launch_hgemvr(x2, w, *args[:5], y, finish=cfg.kind.endswith("f"), **hgemvr_flags(cfg.kind))

    elif cfg.kind == "hgemv3":  # 3-bit half2 GEMV (quant_hgemv3)
        launch_hgemv3(x2, w, *args)
    elif cfg.kind == "mma":
        launch_mma(x2, w, *args)
    elif cfg.kind in ("tc", "tcf", "tc2", "tcf2"):  # quant_tcg (Gluon); see quant_tc
        launch_tensor_core(x2, w, *args, kind=cfg.kind)
    elif cfg.kind in TCL_KINDS:  # quant_tcl (Gluon): the large-M tile GEMM (+ its x pre-pass)
        launch_tcl_kind(x2, w, cfg, y)
    elif cfg.kind in ("tcv", "tcv2"):  # quant_tcv (Gluon, sm_90); the same product as "tc" under the interpreter
        launch_tcv_kind(x2, w, cfg, y)
    elif cfg.kind in TCW_KINDS:  # quant_tcw: warp-specialized large-M kernel (block_n fixed at 128)
        launch_tcw_kind(x2, w, cfg, y)
    elif cfg.kind in TCS_KINDS:  # quant_tcs: small-M TMA-ring GEMV (block_n = 64 x consumer warpgroups)
        launch_tcs_kind(x2, w, cfg, y)
    elif cfg.kind in TCSX_KINDS:  # quant_tcsx: quant_tcs's ACC_SCALE loop, x streamed through the ring (+ pre-pass)
        launch_tcsx_kind(x2, w, cfg, y)
    elif cfg.kind == "dequant":
        dequant_matmul(x2, w, y)
    elif cfg.kind == "tile":
        _launch_tile(x2, w, cfg, y)
    else:
        raise ValueError(f"unknown kernel kind {cfg.kind!r}")


TCW_KINDS = ("tcw", "tcwn", "tcwx")  # = quant_tcw.KINDS (that module imports Gluon's Hopper TMA support: not here)


def launch_tcw_kind(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor) -> None:
    """Kinds "tcw" / "tcwn" / "tcwx" (quant_tcw: ping-pong consumers / without / read-and-clear atomic split-K; block_n
    128, num_stages = the TMA ring's depth): quant_tcw on CUDA; under the interpreter quant_tc's twin "tcf" (the same
    (q - z) * s operand and one fp32 accumulator, quant_tcw's docstring) with the config's block_m and split_k, and
    quant_tcw's refusal of weights other than 4-bit (the twin would take 3-bit ones)."""
    if x2.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        from .quant_tcw import launch_tcw  # late: Gluon's Hopper TMA module, CUDA only

        launch_tcw(x2, w, cfg.block_m, cfg.split_k, cfg.num_stages, y, cfg.kind)
    else:
        if w.bits != 4:
            raise ValueError(f"{cfg.kind} needs 4-bit weights (quant_tcw), got {w.bits}-bit")
        launch_tensor_core(x2, w, cfg.block_m, 128, 128, cfg.split_k, 4, 1, y, kind="tcf")


def launch_tcv_kind(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor) -> None:
    """Kinds "tcv" / "tcv2" (operand in two K=64 halves): quant_tcv on CUDA (num_stages: 1-3 register sets of word
    tiles, 4-8 slots of a per-thread cp.async ring), quant_tc's "tc" (the same exact (q - z) operand and fp32 tile
    scaling) under the interpreter."""
    if x2.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        from .quant_tcv import launch_tcv  # late: Gluon's Hopper module, CUDA only

        launch_tcv(x2, w, cfg.block_m, cfg.block_n, cfg.split_k, cfg.num_warps, cfg.num_stages,
                   2 if cfg.kind == "tcv2" else 1, y)  # fmt: skip
    else:
        launch_tensor_core(x2, w, cfg.block_m, cfg.block_n, 128, cfg.split_k, cfg.num_warps, 1, y, kind="tc")


def launch_tcs_kind(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor) -> None:
    """Kinds "tcs" / "tcss" (split-K in per-split slots) / "tcs2" (quant_tcs PIPE: half-tile wgmmas under the next
    half's dequantization), "tcsa" / "tcs2a" (ACC_SCALE: the exact (q - z) operand, each K tile's fp32 result
    scaled by its group's scale) and ACC_SCALE's SZ_MODE variants "tcs2ao" (tcs2a, scales / zeros staged after the x
    loads), "tcs2at" / "tcsat" (tcs2a / tcsa, scale and zero rows TMA-copied by the producer warp: g128, N % 32 == 0):
    quant_tcs on CUDA (block_n 64 or 128 = 1 or 2 consumer warpgroups, num_stages = the TMA ring's depth); under the
    interpreter quant_tc's kind with the same operand ("tcf": (q - z) * s; "tc": the exact (q - z) and fp32 tile
    scaling, every ACC_SCALE kind)."""
    if x2.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        from .quant_tcs import launch_tcs  # late: Gluon's Hopper TMA module, CUDA only

        launch_tcs(x2, w, cfg.block_m, cfg.split_k, cfg.num_stages, cfg.block_n // 64, y, cfg.kind)
    else:
        launch_tensor_core(x2, w, cfg.block_m, 64, 128, cfg.split_k, 4, 1, y,
                           kind="tc" if cfg.kind in TCS_ACC_KINDS else "tcf")  # fmt: skip


def launch_tcsx_kind(x2: torch.Tensor | None, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor,
                     xp: torch.Tensor | None = None) -> None:  # fmt: skip
    """Kinds "tcsx" / "tcsx2" (PIPE: two K = 64 half wgmmas a tile): quant_tcsx on CUDA, its pre-pass (x into the
    operand's K order, act-order composed in: quant_tcl.tcl_permute) launched first inside the call (block_n 64 or 128
    = 1 or 2 consumer warpgroups, num_stages = the ring's depth, block_m 16-128, rows past one block in more row
    blocks); under the interpreter quant_tc's "tc" (the exact (q - z) operand and fp32 tile scaling: the ACC_SCALE
    numerics) with block_m capped at 64. xp (x2 may then be None): x already in the operand's K order (= quant_tcl.
    tcl_permute(x2, w), e.g. written so by the norm before the GEMM: model.llama_fast's TCSX_XP), so no pre-pass;
    checked as quant_matmul checks x (check_xp); under the interpreter x2 is recovered from it (natural_x)."""
    xa = x2 if x2 is not None else xp
    if xa is None:
        raise ValueError("launch_tcsx_kind: x2 or xp is needed")
    gluon = xa.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"
    if gluon:
        need_sm90(xa.device, cfg.kind)  # callers with xp skip launch_quant_matmul's check (LLVM aborts elsewhere)
    if xp is not None:
        check_xp(xp, w, y, "launch_tcsx_kind")
    if gluon:
        from .quant_tcsx import launch_tcsx  # late: Gluon's Hopper TMA module, CUDA only

        launch_tcsx(xa, w, cfg.block_m, cfg.split_k, cfg.num_stages, cfg.block_n // 64, y, cfg.kind, xp=xp)
    else:
        launch_tensor_core(x2 if x2 is not None else natural_x(xp, w), w, min(cfg.block_m, 64), 64, 128, cfg.split_k,
                           4, 1, y, kind="tc")  # fmt: skip


def launch_tcl_kind(x2: torch.Tensor | None, w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor,
                    xp: torch.Tensor | None = None) -> None:  # fmt: skip
    """Kinds "tcl" / "tclp" / "tcls" (quant_tcl PIPE 0 / 1 / 2; num_stages = the cp.async ring's depth): quant_tcl on
    CUDA (launch_tcl: its pre-pass, x into the operand's K order by quant_tcl.tcl_permute, first inside the call);
    under the interpreter quant_tc's twin "tcf" (launch_tensor_core). xp (x2 may then be None): x already in that
    order, so no pre-pass (model.llama_fast's TCSX_XP for tcl picks; 4-bit, where the order is quant_tcsx's); checked
    as quant_matmul checks x (check_xp); under the interpreter x2 is recovered from it (natural_x)."""
    xa = x2 if x2 is not None else xp
    if xa is None:
        raise ValueError("launch_tcl_kind: x2 or xp is needed")
    gluon = xa.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"
    if gluon and xp is not None:
        need_sm90(xa.device, cfg.kind)  # callers with xp skip launch_quant_matmul's check (LLVM aborts elsewhere)
    if xp is not None:
        check_xp(xp, w, y, "launch_tcl_kind")
    if gluon:
        from .quant_tcl import launch_tcl  # late: Gluon's Hopper module, CUDA only

        launch_tcl(None if xp is not None else x2, w, cfg.block_m, cfg.block_n, cfg.split_k, cfg.num_warps,
                   cfg.num_stages, TCL_KINDS.index(cfg.kind), y, xp=xp)  # fmt: skip
    else:
        launch_tensor_core(x2 if x2 is not None else natural_x(xp, w), w, cfg.block_m, cfg.block_n, 128, cfg.split_k,
                           cfg.num_warps, cfg.num_stages, y, kind=cfg.kind)  # fmt: skip


def launch_xp_kind(w: GPTQWeight, cfg: QMMConfig, y: torch.Tensor, xp: torch.Tensor) -> None:
    """y = x @ W for a kind in XP_KINDS, xp = x in the operand's K order (no pre-pass): launch_tcsx_kind or
    launch_tcl_kind with xp (each checks xp: check_xp); any other kind is refused (ValueError)."""
    if cfg.kind in TCSX_KINDS:
        launch_tcsx_kind(None, w, cfg, y, xp=xp)
    elif cfg.kind in TCL_KINDS:
        launch_tcl_kind(None, w, cfg, y, xp=xp)
    else:
        raise ValueError(f"kind {cfg.kind!r} takes no operand-ordered x (XP_KINDS: {XP_KINDS})")


def check_xp(xp: torch.Tensor, w: GPTQWeight, y: torch.Tensor, who: str) -> None:
    """Refuse (ValueError) an operand-ordered x that quant_matmul would refuse as x, or a y not [M, N]: callers with xp
    skip quant_matmul's checks, and the kernels read K and N from the weight, so a wrong K or y would be read or
    written out of bounds, silently. (xp's strides and alignment: the kernels' own checks, quant_tcl / quant_tcsx.)"""
    if xp.dim() != 2 or xp.shape[1] != w.in_features:
        raise ValueError(f"{who}: xp must be [M, K] with K = the weight's in_features {w.in_features}, got shape "
                         f"{tuple(xp.shape)}")  # fmt: skip
    if xp.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"{who}: xp must be fp16 or bf16, got {xp.dtype}")
    if y.dim() != 2 or y.shape[0] != xp.shape[0] or y.shape[1] != w.out_features:
        raise ValueError(f"{who}: y must be [M, N] = [{xp.shape[0]}, {w.out_features}] (xp's rows, the weight's "
                         f"out_features), got shape {tuple(y.shape)}")  # fmt: skip


def natural_x(xp: torch.Tensor, w: GPTQWeight) -> torch.Tensor:
    """x in its natural column order from xp, x in w's operand K order (x[:, x_order(K, w.perm, bits)] = xp, the inverse
    of quant_tcl.tcl_permute): what the interpreter's twins (quant_tc) read in place of the Gluon kernels' xp."""
    from .quant_tcl import x_order  # late: quant_tcl imports Gluon's Hopper module

    x2 = torch.empty_like(xp)
    x2[:, x_order(xp.shape[1], w.perm, xp.device, w.bits)] = xp
    return x2


def tuning_input(x2: torch.Tensor) -> torch.Tensor:
    """What the tuner times and checks candidates on: unit-normal values of x2's shape, dtype and device, from
    a private generator (the global RNG is left alone). Kernel time does not depend on the values, and live
    activations may hold inf or NaN (seen with random-weight benchmark models), which would make the guard reject
    every candidate, the reference included."""
    gen = torch.Generator(device=x2.device).manual_seed(0)
    return torch.randn(x2.shape, generator=gen, device=x2.device, dtype=torch.float32).to(x2.dtype)


def hgemvr_flags(kind: str) -> dict[str, bool]:
    """launch_hgemvr's variant flags of a row-GEMV kind (HGEMVR_KINDS; the "f" suffix, its finish kernel, aside)."""
    base = kind.removesuffix("f")
    return dict(burst=base == "hgemvrb", const_stride=True, pin=base == "hgemvrq")


def tuned_config(x2: torch.Tensor, w: GPTQWeight) -> QMMConfig:
    """The tuner's pick for x2 [M, K] @ w (tuning it on first use of the shape): what quant_matmul runs."""
    return pick_config(x2, w, *tuning_calls(x2, w))


def tuning_calls(x2: torch.Tensor, w: GPTQWeight) -> tuple[Callable[[QMMConfig], None], Callable[[QMMConfig], bool]]:
    """pick_config's run and verify callbacks on tuning_input(x2), made on first use only (a tuned shape's calls
    never build it)."""
    box: list[tuple[torch.Tensor, torch.Tensor]] = []

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        if not box:
            xt = tuning_input(x2)
            box.append((xt, torch.empty(xt.shape[0], w.out_features, dtype=xt.dtype, device=xt.device)))
        return box[0]

    def run(c: QMMConfig) -> None:
        xt, yt = inputs()
        launch_quant_matmul(xt, w, c, yt)

    return run, lambda c: _verify(inputs()[0], w, c)


def _verify(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> bool:
    """Does cfg's kernel agree with dequantize + cuBLAS on this input? (run once per tuned shape)"""
    ref = torch.empty(x2.shape[0], w.out_features, dtype=x2.dtype, device=x2.device)
    out = torch.empty_like(ref)
    dequant_matmul(x2, w, ref)
    launch_quant_matmul(x2, w, cfg, out)
    return agrees(out, ref)


def quant_matmul(x: torch.Tensor, w: GPTQWeight, cfg: QMMConfig | None = None) -> torch.Tensor:
    """y[..., N] = x[..., K] @ dequant(W); x fp16 or bf16, y in x's dtype. Tunes once per shape on CUDA."""
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be fp16 or bf16, got {x.dtype}")
    if x.shape[-1] != w.in_features:
        raise ValueError(f"x has K={x.shape[-1]}, weight expects {w.in_features}")
    x2 = x.reshape(-1, w.in_features)
    y = torch.empty(x2.shape[0], w.out_features, dtype=x.dtype, device=x.device)
    if x2.shape[0] == 0:
        return y.reshape(*x.shape[:-1], w.out_features)
    launch_quant_matmul(x2, w, tuned_config(x2, w) if cfg is None else cfg, y)
    return y.reshape(*x.shape[:-1], w.out_features)


def dequantize_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """W[K, N] fp32 from raw GPTQ tensors: W[k, n] = (q[k, n] - (z[g_idx[k], n] + zero_offset)) * s[g_idx[k], n]."""
    k = qweight.shape[0] * 32 // bits
    n = qweight.shape[1]
    q = unpack_bitstream(qweight, bits, k, dim=0).float()
    z = unpack_bitstream(qzeros, bits, n, dim=1).float() + zero_offset
    gi = g_idx.long()
    return (q - z[gi]) * scales.float()[gi]


def quant_matmul_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int = 1,
) -> torch.Tensor:
    """Pure-torch reference on the raw (un-transformed) GPTQ tensors.

    Semantics:
        W = dequantize_gptq(...)                       # [K, N] fp32, act-order via g_idx
        for m, n: y[m, n] = sum_k float(x[m, k]) * W[k, n]   (fp32), then cast to x.dtype
    """
    w = dequantize_gptq(qweight, qzeros, scales, g_idx, bits, zero_offset)
    return (x.float().reshape(-1, w.shape[0]) @ w).to(x.dtype).reshape(*x.shape[:-1], w.shape[1])


__all__ = ["quant_matmul", "quant_matmul_reference", "dequantize_gptq", "launch_quant_matmul", "candidate_configs"]
