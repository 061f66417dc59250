"""Session 15: critical-path anatomy of the 7B int4 batch-1 decode step by ablation (issue 4).

Under PDL a kernel's profiled duration includes its wait on the previous kernel, so a profile does not say what each
kernel class costs the step. Here every variant of the shipped batch-1 step (fusion "swiglu+cfin", PDL mode 1, the
shipped tuner table: INLAID_QMM_TUNED=1) removes or replaces ONE kernel class of all 32 layers, keeping the PDL chain
valid, and the step's device time is compared with the shipped step's, round by round (s14_cfin.py / s12_norm.point's
protocol: every variant's graph captured once on ONE runner, then --rounds rounds in which the variants take turns;
device ms = event-timed --replays back-to-back replays of the variant's own graph).

Variant names: "+"-joined parts; "base" / "ctl" (the shipped step, captured twice: ctl is the noise control);
"<class>=<mode>" with class qkv, attn, o, norm, gu (gate/up + SwiGLU), down, "gemv" (the four GEMVs) or "all", and mode
  real   the shipped kernel;
  read   a PDL-aware pure read of the GEMV's packed words, scales and zeros at the GEMV's grid (N tiles x K splits, its
         warps), its first tiles loaded before griddepcontrol.wait exactly as the GEMV prefetches them (all of a burst
         kind's, else the first), one int per column and split written to a scratch buffer: no dequant, no split-K sum;
  empty  a PDL-aware empty kernel (launch_dependents, wait) with the kernel's grid and warps;
  copy   (norm) a one-CTA kernel that waits, loads the GEMV's sums, zeroes them and stores fp16(sum): no residual add,
         no reduction;
  none   no kernel (the consumer reads a persistent zero buffer; after o / down with no norm, x = h);
  burst  (qkv, down) the shipped GEMV config run as kind "hgemvrb" (all 4 K tiles of a program loaded before the PDL
         wait instead of the first): a lever, not an ablation;
  nomerge (attn) the shipped row kernel's source compiled with a _finish that only stores each partition's partial
         (no barrier, no arrival atomic, no last-partition merge); direct (attn): every partition stores its own
         normalised partial straight into the output (racing): the cost of the in-kernel merge;
  sN / pN / wN  the shipped kernel with a knob changed: a GEMV's split_k N, the attention's N partitions, the norm's
         N warps (same math: the self-check compares their logits);
"xa" / "xn": one extra empty PDL kernel (1 CTA) per layer after the attention / after the norm that follows o (the
marginal cost of one more boundary); "pdl0" / "pdl3": the graph captured with PDL mode 0 (off) / 3 (mode 1 without
the GEMVs' weight prefetch).
Numbers of ablated steps are wrong (fine for timing): the o / down GEMVs' deferred sums are left in the split-K
workspace when their norm is ablated; the next counter GEMV (qkv, gate/up) adds into and clears that region, so
nothing reads out of bounds and no counter is left set. No value is used for control flow inside the graph.

Iso times (PDL off): each kernel class alone in a CUDA graph of its 32 launches (one per layer, the launches recorded
during the shipped step's eager warm-up with that step's own tensors), per launch; plus the pure reads, an empty
kernel and the LM head GEMM.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s15_anatomy.py --out DIR
CPU smoke check (interpreter, a tiny one-layer model, every variant's wrappers and kernels):
  TRITON_INTERPRET=1 PYTHONPATH=workers:bench/kernels:workers/tests/kernels python3 bench/kernels/s15_anatomy.py --selftest
Nothing in the package is changed: the ablations monkeypatch model.llama_fast's kernel entry points (and restore them).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl

sys.path.append(str(Path(__file__).resolve().parents[1] / "engine"))  # after PYTHONPATH (a snapshot may come first)

from graph_timing import replay_ms  # noqa: E402
from inlaid_worker.kernels import consumer_finish as cf  # noqa: E402
from inlaid_worker.kernels import decode_row, fused_norm, quant_common  # noqa: E402
from inlaid_worker.kernels.fused_norm import add_rms_norm_sums  # noqa: E402
from inlaid_worker.kernels.pdl import gdc_enter, gdc_start, gdc_wait, launch_kw  # noqa: E402
from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr  # noqa: E402
from inlaid_worker.kernels.quant_matmul import hgemvr_flags, quant_matmul  # noqa: E402
from inlaid_worker.model import llama_fast  # noqa: E402

FUSION = "swiglu+cfin"  # decode_graphs.FUSION_POLICY at bucket 1 when these runs were made (now "swiglu+cfin+g")
CLASSES = ("qkv", "attn", "o", "norm", "gu", "down")
GEMVS = ("qkv", "o", "gu", "down")
MODES = {"qkv": ("real", "read", "empty", "none", "burst"), "attn": ("real", "empty", "none", "nomerge", "direct"),
         "o": ("real", "read", "empty", "none"), "norm": ("real", "copy", "empty", "none"),
         "gu": ("real", "read", "empty", "none"), "down": ("real", "read", "empty", "none", "burst")}  # fmt: skip
EXTRAS = ("xa", "xn")
DEFAULT_VARIANTS = ("base,ctl,norm=copy,norm=empty,norm=none,attn=empty,attn=none,qkv=read,qkv=none,o=read,o=none,"
                    "gu=read,gu=none,down=read,down=none,gemv=read,all=empty,all=none,xa,xn,pdl3,"
                    "qkv=burst,down=burst,qkv=burst+down=burst,gemv=empty,pdl0")  # fmt: skip


# --------------------------------------------------------------------------------------------------------- kernels
@triton.jit
def _empty_kernel(dummy_ptr, USE_GDC: tl.constexpr = 0):
    """The cheapest PDL-aware kernel: let dependents launch, wait for the previous kernel (every program waits)."""
    gdc_enter(USE_GDC)


@triton.jit
def _norm_copy_kernel(ws_ptr, out_ptr, n, BLOCK: tl.constexpr, USE_GDC: tl.constexpr = 0):
    """One program per row: after the wait, x = fp16(sums), sums zeroed (after a CTA barrier), out = x."""
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    gdc_enter(USE_GDC)
    x = tl.load(ws_ptr + row * n + offs, mask=mask, other=0.0)
    tl.debug_barrier()
    tl.store(ws_ptr + row * n + offs, tl.zeros((BLOCK,), tl.float32), mask=mask)
    tl.store(out_ptr + row * n + offs, x.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _read_kernel(qw_ptr, sc_ptr, qz_ptr, out_ptr, N, K_TILES, ITERS, stride_qk, stride_sg, stride_zg,
                 BLOCK_N: tl.constexpr, RO: tl.constexpr, ZN: tl.constexpr, PRE: tl.constexpr, TPG: tl.constexpr,
                 USE_GDC: tl.constexpr = 0):  # fmt: skip
    """Program (N tile, K split) reads its ITERS tiles (RO word rows x BLOCK_N columns, one group's scales and zeros
    each); tiles [0, PRE) are loaded before the PDL wait (the GEMV's prefetch), the rest after it; one int per column
    and split is stored. N % BLOCK_N == 0; TPG tiles per quantization group (1 at the 7B shapes' block_k 128)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, RO)
    offs_z = pid_n * ZN + tl.arange(0, ZN)
    t0 = pid_k * ITERS
    mine = tl.minimum(ITERS, K_TILES - t0)
    gdc_start(USE_GDC)
    w0 = tl.load(qw_ptr + ((t0 * RO + offs_r) * stride_qk)[:, None] + offs_n[None, :])
    s0 = tl.load(sc_ptr + (t0 // TPG) * stride_sg + offs_n).to(tl.int16, bitcast=True).to(tl.int32)
    z0 = tl.load(qz_ptr + (t0 // TPG) * stride_zg + offs_z)
    if PRE >= 2:
        ok1 = 1 < mine
        w1 = tl.load(qw_ptr + (((t0 + 1) * RO + offs_r) * stride_qk)[:, None] + offs_n[None, :], mask=ok1, other=0)
        s1 = tl.load(sc_ptr + ((t0 + 1) // TPG) * stride_sg + offs_n, mask=ok1, other=0.0).to(tl.int16, bitcast=True)
        z1 = tl.load(qz_ptr + ((t0 + 1) // TPG) * stride_zg + offs_z, mask=ok1, other=0)
    if PRE >= 3:
        ok2 = 2 < mine
        w2 = tl.load(qw_ptr + (((t0 + 2) * RO + offs_r) * stride_qk)[:, None] + offs_n[None, :], mask=ok2, other=0)
        s2 = tl.load(sc_ptr + ((t0 + 2) // TPG) * stride_sg + offs_n, mask=ok2, other=0.0).to(tl.int16, bitcast=True)
        z2 = tl.load(qz_ptr + ((t0 + 2) // TPG) * stride_zg + offs_z, mask=ok2, other=0)
    if PRE >= 4:
        ok3 = 3 < mine
        w3 = tl.load(qw_ptr + (((t0 + 3) * RO + offs_r) * stride_qk)[:, None] + offs_n[None, :], mask=ok3, other=0)
        s3 = tl.load(sc_ptr + ((t0 + 3) // TPG) * stride_sg + offs_n, mask=ok3, other=0.0).to(tl.int16, bitcast=True)
        z3 = tl.load(qz_ptr + ((t0 + 3) // TPG) * stride_zg + offs_z, mask=ok3, other=0)
    gdc_wait(USE_GDC)
    acc = w0
    sacc = s0
    zacc = z0
    if PRE >= 2:
        acc ^= w1
        sacc ^= s1.to(tl.int32)
        zacc ^= z1
    if PRE >= 3:
        acc ^= w2
        sacc ^= s2.to(tl.int32)
        zacc ^= z2
    if PRE >= 4:
        acc ^= w3
        sacc ^= s3.to(tl.int32)
        zacc ^= z3
    for t in range(PRE, mine):
        acc ^= tl.load(qw_ptr + (((t0 + t) * RO + offs_r) * stride_qk)[:, None] + offs_n[None, :])
        sacc ^= tl.load(sc_ptr + ((t0 + t) // TPG) * stride_sg + offs_n).to(tl.int16, bitcast=True).to(tl.int32)
        zacc ^= tl.load(qz_ptr + ((t0 + t) // TPG) * stride_zg + offs_z)
    out = tl.sum(acc & 0xFF, axis=0) + (sacc & 0xFF) + tl.sum(zacc & 0xF, axis=0)
    tl.store(out_ptr + pid_k * N + offs_n, out)


@triton.jit
def _finish_nomerge(out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, m_i, l_i, acc, s, kvh, part, d, mask_d, n_busy,
                    stride_ot, stride_oh, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, REP: tl.constexpr,
                    REP_PAD: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr,
                    MERGE_CHUNK: tl.constexpr, MERGE: tl.constexpr = 0):  # fmt: skip
    """decode_row._finish without the merge: each busy partition stores its partial (max, sum, unnormalised output)
    and nothing else (no barrier, no arrival counter, no last-partition merge): what a consumer-side merge would leave
    the attention doing. The output is not written (timing only)."""
    if REP_PAD == 1:
        rows = s * HEADS + kvh
        o_ptrs = out_ptr + s * stride_ot + kvh * stride_oh + d
        o_mask = mask_d
        p_mask = True
        part_rows = rows * NUM_PARTS + part
        pacc_ptrs = pacc_ptr + part_rows * D_PAD + d
        l_div = tl.where(l_i > 0, l_i, 1.0)
    else:
        r = tl.arange(0, REP_PAD)
        heads = kvh * REP + r
        rows = s * HEADS + heads
        o_ptrs = out_ptr + s * stride_ot + heads[:, None] * stride_oh + d[None, :]
        o_mask = (r < REP)[:, None] & mask_d[None, :]
        p_mask = r < REP
        part_rows = rows * NUM_PARTS + part
        pacc_ptrs = pacc_ptr + part_rows[:, None] * D_PAD + d[None, :]
        l_div = tl.where(l_i > 0, l_i, 1.0)[:, None]
    if n_busy <= 1:
        tl.store(o_ptrs, (acc / l_div).to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        tl.store(pm_ptr + part_rows, m_i, mask=p_mask)
        tl.store(pl_ptr + part_rows, l_i, mask=p_mask)
        tl.store(pacc_ptrs, acc, mask=o_mask)


@triton.jit
def _finish_direct(out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, m_i, l_i, acc, s, kvh, part, d, mask_d, n_busy,
                   stride_ot, stride_oh, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, REP: tl.constexpr,
                   REP_PAD: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr,
                   MERGE_CHUNK: tl.constexpr, MERGE: tl.constexpr = 0):  # fmt: skip
    """Every partition stores its own normalised partial straight into the output (racing, wrong: timing only): no
    partials, no counter, no merge (the floor of the attention's epilogue)."""
    if REP_PAD == 1:
        tl.store(out_ptr + s * stride_ot + kvh * stride_oh + d, (acc / tl.where(l_i > 0, l_i, 1.0)).to(
            out_ptr.dtype.element_ty), mask=mask_d)  # fmt: skip
    else:
        r = tl.arange(0, REP_PAD)
        heads = kvh * REP + r
        tl.store(out_ptr + s * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 (acc / tl.where(l_i > 0, l_i, 1.0)[:, None]).to(out_ptr.dtype.element_ty),
                 mask=(r < REP)[:, None] & mask_d[None, :])  # fmt: skip


def _row_kernel_with(finish) -> Any:  # type: ignore[no-untyped-def]
    """decode_row._row_kernel's source compiled with `finish` in place of its _finish (a copy of the Python function
    with its module globals and that one name replaced; the package's kernel is untouched)."""
    import types

    f = decode_row._row_kernel.fn
    scope = dict(f.__globals__, _finish=finish)
    g = types.FunctionType(f.__code__, scope, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__, g.__doc__, g.__module__ = f.__kwdefaults__, f.__doc__, f.__module__
    g.__annotations__ = dict(f.__annotations__)  # (the constexpr parameters: Triton reads them from here)
    g.__qualname__ = f.__qualname__ + "_" + finish.fn.__name__ if hasattr(finish, "fn") else f.__qualname__
    return triton.jit(g)


ROW_KERNELS: dict[str, Any] = {}


def row_launch(mode: str, q, stride_qt, stride_qh, heads, k_cache, v_cache, block_tables, context_lens, scale,  # type: ignore[no-untyped-def]
               out, num_parts, opt, rope, sums=False):  # fmt: skip
    """decode_row._launch (the HEAD snapshot's) with the kernel of `mode` ("nomerge" / "direct")."""
    from inlaid_worker.kernels.decode_fused import counters
    from inlaid_worker.kernels.paged_decode import workspace

    if mode not in ROW_KERNELS:
        ROW_KERNELS[mode] = _row_kernel_with(_finish_nomerge if mode == "nomerge" else _finish_direct)
    kernel = ROW_KERNELS[mode]
    s, hd = out.shape[0], k_cache.shape[3]
    kv_heads = k_cache.shape[2]
    rep = heads // kv_heads
    block_n = int(opt["block_n"])
    d_pad = triton.next_power_of_2(hd)
    if num_parts > 1:
        pm, pl, pacc = workspace(s * heads * num_parts, d_pad, q.device)
    else:
        pm = pl = pacc = out
    cnt = counters(q.device, s * kv_heads)
    cos, sin, slots = rope
    kernel[(num_parts, kv_heads, s)](
        q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc, cnt, cos, sin, slots, scale,
        stride_qt, stride_qh, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0),
        v_cache.stride(1), v_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1), cos.stride(0),
        HEADS=heads, KV_HEADS=kv_heads, REP=rep, REP_PAD=triton.next_power_of_2(rep), HEAD_DIM=hd, D_PAD=d_pad,
        BLOCK_SIZE=k_cache.shape[1], NUM_PARTS=num_parts, BLOCK_N=block_n, MERGE_CHUNK=min(num_parts, 8),
        PREFETCH=int(opt["prefetch"]), LOOKAHEAD=int(opt["lookahead"]), ROPE=1, SUMS=int(sums),
        num_warps=int(opt["num_warps"]), num_stages=1, **({"maxnreg": int(opt["maxnreg"])} if opt["maxnreg"] else {}),
        **launch_kw(),
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------ ablation state
@dataclasses.dataclass
class State:
    modes: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(CLASSES, "real"))
    extra: frozenset = frozenset()
    qkv_ids: set = dataclasses.field(default_factory=set)
    o_ids: set = dataclasses.field(default_factory=set)
    down_ids: set = dataclasses.field(default_factory=set)
    bufs: dict = dataclasses.field(default_factory=dict)  # persistent buffers, made before any capture
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    recording: bool = False
    record: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    meta: dict = dataclasses.field(default_factory=dict)  # per class: config, grid, bytes (from the recording)


ST = State()
REAL: dict[str, Any] = {}


def parse(name: str) -> tuple[dict, int, frozenset]:
    """Variant name -> (mode per class, PDL mode, extras)."""
    modes, pdl_mode, extra = dict.fromkeys(CLASSES, "real"), 1, set()
    for part in name.split("+"):
        if part in ("base", "ctl"):
            continue
        if part.startswith("pdl") and part[3:].isdigit():
            pdl_mode = int(part[3:])
        elif part in EXTRAS:
            extra.add(part)
        else:
            key, _, mode = part.partition("=")
            keys = GEMVS if key == "gemv" else CLASSES if key == "all" else (key,)
            for k in keys:
                if k not in MODES or (mode not in MODES[k] and not param_mode(k, mode)):
                    raise ValueError(f"variant {name!r}: {k}={mode} is not one of {MODES.get(k)} (or sN / pN / wN)")
                modes[k] = mode
    return modes, pdl_mode, frozenset(extra)


def param_mode(cls: str, mode: str) -> int | None:
    """The integer of a parametrised mode: "s<N>" (a GEMV: the shipped config with split_k N), "p<N>" (attn: the
    row kernel with N partitions), "w<N>" (norm: the shipped add + RMSNorm with N warps); else None."""
    prefix = "s" if cls in GEMVS else "p" if cls == "attn" else "w" if cls == "norm" else None
    if prefix and mode.startswith(prefix) and mode[1:].isdigit() and int(mode[1:]) > 0:
        return int(mode[1:])
    return None


def install(weights) -> None:  # type: ignore[no-untyped-def]
    """Patch llama_fast's kernel entry points with the dispatching wrappers (idempotent)."""
    ST.qkv_ids = {id(layer.qkv) for layer in weights.layers}
    ST.o_ids = {id(layer.o.parts[0]) for layer in weights.layers}
    ST.down_ids = {id(layer.down.parts[0]) for layer in weights.layers}
    if not REAL:
        REAL.update(linear=llama_fast.linear, attn=llama_fast.row_rope_decode, gu=llama_fast.gemv_swiglu,
                    add_norm=llama_fast.gemv_add_norm)  # fmt: skip
    llama_fast.linear, llama_fast.row_rope_decode = _linear, _attn
    llama_fast.gemv_swiglu, llama_fast.gemv_add_norm = _gu, _add_norm


def uninstall() -> None:
    if REAL:
        llama_fast.linear, llama_fast.row_rope_decode = REAL["linear"], REAL["attn"]
        llama_fast.gemv_swiglu, llama_fast.gemv_add_norm = REAL["gu"], REAL["add_norm"]


def prepare(c, device: torch.device, dtype: torch.dtype, rows: int = 1) -> None:  # type: ignore[no-untyped-def]
    """The persistent buffers the ablations read or write (made outside any capture)."""
    n_qkv = c.q_size + 2 * c.kv_size
    ST.bufs["dummy"] = torch.zeros(16, dtype=torch.int32, device=device)
    ST.bufs["scratch"] = torch.zeros(4 * 1024 * 1024, dtype=torch.int32, device=device)
    for shape in ((rows, n_qkv), (rows, c.num_heads, c.head_dim), (rows, c.intermediate_size)):
        ST.bufs[shape] = torch.zeros(shape, dtype=dtype, device=device)


def zeros(shape: tuple, like: torch.Tensor) -> torch.Tensor:
    buf = ST.bufs.get(shape)
    if buf is None or buf.dtype != like.dtype:
        raise RuntimeError(f"s15: no prepared zero buffer {shape} {like.dtype}")
    return buf


def rec(name: str, fn, *args: Any, **kw: Any) -> None:  # type: ignore[no-untyped-def]
    """Record a launch (the shipped step's eager warm-up only) for the iso graphs."""
    if ST.recording and not torch.cuda.is_current_stream_capturing():
        ST.record[name].append(functools.partial(fn, *args, **kw))


def pick(x2: torch.Tensor, w):  # type: ignore[no-untyped-def]
    return cf.config_for(x2, w)  # the tuner's pick (tests replace cf.config_for to force one)


def prefetch_tiles(cfg, w) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(tiles a program of cfg's GEMV loads before its PDL wait, its tiles): a burst kind all (<= 4), else 1."""
    iters, _ = quant_common.split_iters(w.in_features // cfg.block_k, cfg.split_k)
    return (min(iters, 4) if hgemvr_flags(cfg.kind)["burst"] else 1), iters


def launch_read(w, cfg, pre: int | None = None) -> None:  # type: ignore[no-untyped-def]
    if w.group_size % cfg.block_k or w.out_features % cfg.block_n or w.bits != 4 or w.perm is not None:
        raise ValueError(f"s15 read: block_k {cfg.block_k} vs group {w.group_size}, N {w.out_features}")
    k_tiles = w.in_features // cfg.block_k
    iters, split = quant_common.split_iters(k_tiles, cfg.split_k)
    pre = prefetch_tiles(cfg, w)[0] if pre is None else pre
    n = w.out_features
    out = ST.bufs["scratch"]
    if split * n > out.numel():
        raise ValueError("s15 read: scratch too small")
    _read_kernel[(n // cfg.block_n, split)](w.qweight, w.scales, w.qzeros, out, n, k_tiles, iters,
                                            w.qweight.stride(0), w.scales.stride(0), w.qzeros.stride(0),
                                            BLOCK_N=cfg.block_n, RO=cfg.block_k // 8, ZN=cfg.block_n // 8,
                                            PRE=min(pre, iters), TPG=w.group_size // cfg.block_k, num_warps=cfg.num_warps, num_stages=1,
                                            **launch_kw())  # fmt: skip


def launch_empty(grid: tuple, warps: int) -> None:
    _empty_kernel[grid](ST.bufs["dummy"], num_warps=warps, **launch_kw())


def gemv_grid(w, cfg) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    return triton.cdiv(w.out_features, cfg.block_n), quant_common.split_iters(
        w.in_features // cfg.block_k, cfg.split_k
    )[1]


def gemv_stub(mode: str, x2: torch.Tensor, w, cfg) -> None:  # type: ignore[no-untyped-def]
    if mode == "read":
        launch_read(w, cfg)
    elif mode == "empty":
        launch_empty(gemv_grid(w, cfg), cfg.num_warps)
    elif mode != "none":
        raise ValueError(mode)


def note(cls: str, w, cfg) -> None:  # type: ignore[no-untyped-def]
    """What the iso table needs of a GEMV class (once)."""
    if cls not in ST.meta:
        pre, iters = prefetch_tiles(cfg, w)
        ST.meta[cls] = dict(kind=cfg.kind, block_n=cfg.block_n, block_k=cfg.block_k, split=gemv_grid(w, cfg)[1],
                            warps=cfg.num_warps, grid=list(gemv_grid(w, cfg)), iters=iters, prefetch=pre,
                            bytes=w.qweight.nbytes + w.scales.nbytes + w.qzeros.nbytes, n=w.out_features,
                            k=w.in_features)  # fmt: skip


# --------------------------------------------------------------------------------------------------- wrappers
def _linear(x: torch.Tensor, w):  # type: ignore[no-untyped-def]
    if id(w) not in ST.qkv_ids:
        return REAL["linear"](x, w)
    ST.counts["qkv"] += 1
    wp = w.parts[0]
    cfg = pick(x, wp)
    note("qkv", wp, cfg)
    mode = ST.modes["qkv"]
    if mode == "real":
        rec("qkv", REAL["linear"], x, w)
        rec("read_qkv", launch_read, wp, cfg)
        return REAL["linear"](x, w)
    if mode == "burst":
        return quant_matmul(x, wp, dataclasses.replace(cfg, kind="hgemvrb"))
    if param_mode("qkv", mode):
        return quant_matmul(x, wp, dataclasses.replace(cfg, split_k=param_mode("qkv", mode)))
    gemv_stub(mode, x, wp, cfg)
    return zeros((x.shape[0], wp.out_features), x)


def _attn(qkv, cos, sin, slot_mapping, k_cache, v_cache, block_tables, context_lens, scale, heads,  # type: ignore[no-untyped-def]
          num_parts=None, base=None, sums=False, **opts):  # fmt: skip
    ST.counts["attn"] += 1
    mode = ST.modes["attn"]
    s, kv_heads, hd = qkv.shape[0], k_cache.shape[2], k_cache.shape[3]
    args = (qkv, cos, sin, slot_mapping, k_cache, v_cache, block_tables, context_lens, scale, heads)
    kw = dict(num_parts=num_parts, base=base, sums=sums, **opts)
    opt = decode_row.row_options(base, **opts)
    parts = num_parts or opt["parts"] or (decode_row.row_parts(
        s, kv_heads, torch.cuda.get_device_properties(qkv.device).multi_processor_count, opt["per_sm"])
        if qkv.is_cuda else 1)  # fmt: skip
    if "attn" not in ST.meta:
        ST.meta["attn"] = dict(grid=[parts, kv_heads, s], warps=int(opt["num_warps"]), block_n=int(opt["block_n"]))
    if mode == "real":
        rec("attn", REAL["attn"], *args, **kw)
        out = REAL["attn"](*args, **kw)
    elif param_mode("attn", mode):
        out = REAL["attn"](*args, **dict(kw, num_parts=param_mode("attn", mode)))
    elif mode in ("nomerge", "direct"):
        out = torch.empty(s, heads, hd, dtype=qkv.dtype, device=qkv.device)
        row_launch(mode, qkv, qkv.stride(0), hd, heads, k_cache, v_cache, block_tables, context_lens, scale, out,
                   parts, opt, (cos, sin, slot_mapping), sums)  # fmt: skip
    else:
        if mode == "empty":
            launch_empty((parts, kv_heads, s), int(opt["num_warps"]))
        out = zeros((s, heads, hd), cos)
    if "xa" in ST.extra:
        launch_empty((1,), 1)
    return out


def _gu(x: torch.Tensor, w, cfg=None):  # type: ignore[no-untyped-def]
    ST.counts["gu"] += 1
    cfg = pick(x, w) if cfg is None else cfg
    note("gu", w, cfg)
    mode = ST.modes["gu"]
    if mode == "real":
        rec("gu", REAL["gu"], x, w, cfg)
        rec("read_gu", launch_read, w, cfg)
        return REAL["gu"](x, w, cfg)
    if param_mode("gu", mode):
        return REAL["gu"](x, w, dataclasses.replace(cfg, split_k=param_mode("gu", mode)))
    gemv_stub(mode, x, w, cfg)
    return zeros((x.shape[0], w.out_features // 2), x)


def _add_norm(x2, w, h, norm_weight, eps, cfg=None, clear=None):  # type: ignore[no-untyped-def]
    cls = "o" if id(w) in ST.o_ids else "down" if id(w) in ST.down_ids else None
    cfg = pick(x2, w) if cfg is None else cfg
    if cls is None or clear is not None or not cf.gemv_add_norm_ok(x2, w, h, cfg):
        ST.counts["add_norm_fallback"] += 1
        return REAL["add_norm"](x2, w, h, norm_weight, eps, cfg=cfg, clear=clear)
    cf.check_sums_norm(h, norm_weight)
    ST.counts[cls] += 1
    ST.counts["norm"] += 1
    note(cls, w, cfg)
    gmode, nmode = ST.modes[cls], ST.modes["norm"]
    ws = None
    split = param_mode(cls, gmode) or cfg.split_k
    if gmode in ("real", "burst") or param_mode(cls, gmode):
        launch = functools.partial(launch_hgemvr, x2, w, cfg.block_m, cfg.block_n, cfg.block_k, split,
                                   cfg.num_warps, h, finish=True, defer=True,
                                   **hgemvr_flags("hgemvrb" if gmode == "burst" else cfg.kind))  # fmt: skip
        if gmode == "real":
            rec(cls, launch)
            rec("read_" + cls, launch_read, w, cfg)
        ws = launch()
    else:
        gemv_stub(gmode, x2, w, cfg)
    if ws is None:  # the shared split-K workspace (zero, or an ablated norm's leftovers: values only)
        ws = quant_common.workspace(x2.device, h.numel(), 1)[0]
    if "norm" not in ST.meta:
        ST.meta["norm"] = dict(grid=[h.shape[0]], warps=8 if triton.next_power_of_2(h.shape[1]) >= 2048 else 4,
                               bytes=h.numel() * (4 + 4 + 2 + 2 + 2) + norm_weight.nbytes)  # fmt: skip
    warps = ST.meta["norm"]["warps"]
    if nmode == "real":
        rec("norm_" + cls, add_rms_norm_sums, ws, norm_weight, eps, h)
        out = add_rms_norm_sums(ws, norm_weight, eps, h)
    elif param_mode("norm", nmode):
        out = torch.empty_like(h)
        fused_norm._add_rms_norm_kernel[(h.shape[0],)](
            ws, h, norm_weight, out, h.shape[1], eps, h.shape[1], h.stride(0), out.stride(0), HAS_RES=True,
            BLOCK=triton.next_power_of_2(h.shape[1]), num_warps=param_mode("norm", nmode),
            FROM_SUMS=fused_norm.SUMS_MODE, **launch_kw())  # fmt: skip
    elif nmode == "copy":
        out = torch.empty_like(h)
        _norm_copy_kernel[(h.shape[0],)](ws, out, h.shape[1], BLOCK=triton.next_power_of_2(h.shape[1]),
                                         num_warps=warps, **launch_kw())  # fmt: skip
    elif nmode == "empty":
        launch_empty((h.shape[0],), warps)
        out = h
    else:
        out = h
    if "xn" in ST.extra and cls == "o":
        launch_empty((1,), 1)
    return out


def apply(name: str, runner=None) -> tuple[dict, int, frozenset]:  # type: ignore[no-untyped-def]
    modes, pdl_mode, extra = parse(name)
    ST.modes, ST.extra = modes, extra
    if runner is not None:
        runner.decode_pdl = pdl_mode
    return modes, pdl_mode, extra


# ------------------------------------------------------------------------------------------------------ timing
KEEP: list = []


def key_of(runner, b: int) -> tuple:  # type: ignore[no-untyped-def]
    return next(k for k in runner._graphs._graphs if k[0] == b and not k[1] and k[3] == FUSION)


@torch.inference_mode()
def capture_all(runner, names: list[str], res: dict, t0: float, budget: float) -> dict:  # type: ignore[no-untyped-def]
    from steps import make_step

    c = runner.config
    step = make_step(1, 1, 512, [-1], c.vocab_size, runner.num_kv_blocks)
    dg = runner._graphs
    graphs, info = {}, {}
    base_logits = None
    for i, name in enumerate(names):
        if time.time() - t0 > budget * 0.55 and i >= 2:
            print(f"capture: budget, skipping {names[i:]}", flush=True)
            break
        apply(name, runner)
        ST.counts.clear()
        ST.recording = i == 0  # the first variant (base) records the iso launches in its eager warm-up
        t1 = time.time()
        logits = runner.execute(step).clone()
        ST.recording = False
        key = key_of(runner, 1)
        g = dg._graphs.pop(key)
        KEEP.append(g)
        graphs[name] = g
        if base_logits is None:
            base_logits = logits
        info[name] = dict(pdl=key[2], counts=dict(ST.counts), capture_s=round(time.time() - t1, 2),
                          finite=bool(torch.isfinite(logits).all()),
                          argmax_same=float((logits.argmax(-1) == base_logits.argmax(-1)).float().mean()))  # fmt: skip
        print(f"captured {name:28s} pdl {key[2]} in {info[name]['capture_s']:5.2f} s counts {dict(ST.counts)} "
              f"finite {info[name]['finite']}", flush=True)  # fmt: skip
    apply("base", runner)
    res["variants"] = info
    return graphs


def run_rounds(graphs: dict, args, res: dict, path: Path, t0: float, budget: float) -> None:  # type: ignore[no-untyped-def]
    names = list(graphs)
    dev: dict = {n: [] for n in names}
    res["rounds_device_ms"] = dev
    for r in range(args.rounds):
        for n in names:
            dev[n].append(round(replay_ms(graphs[n].graph, args.replays), 5))
        path.write_text(json.dumps(res, indent=1))
        print(f"round {r}: " + " ".join(f"{n}={dev[n][-1]:.4f}" for n in names), flush=True)
        if r + 1 >= args.min_rounds and time.time() - t0 > budget * 0.8:
            print(f"rounds: budget, stopping after {r + 1}", flush=True)
            break
    base = dev["base"]
    summary = {}
    for n in names:
        diffs = [(y - x) * 1e3 for x, y in zip(base, dev[n], strict=True)]
        summary[n] = dict(median_ms=statistics.median(dev[n]), spread_ms=max(dev[n]) - min(dev[n]),
                          delta_us=statistics.median(diffs), delta_us_min=min(diffs), delta_us_max=max(diffs),
                          lower=sum(d < 0 for d in diffs), rounds=len(diffs))  # fmt: skip
        s = summary[n]
        print(f"{n:28s} {s['median_ms']:.4f} ms (spread {s['spread_ms'] * 1e3:5.1f} us) delta vs base "
              f"{s['delta_us']:+8.1f} us/step [{s['delta_us_min']:+.1f}, {s['delta_us_max']:+.1f}] "
              f"lower {s['lower']}/{s['rounds']}", flush=True)  # fmt: skip
    res["summary"] = summary


@torch.inference_mode()
def iso(runner, args, res: dict, copy_bps: float) -> None:  # type: ignore[no-untyped-def]
    """Each recorded kernel class alone in a graph of its launches (PDL off), per launch, alternating rounds."""
    import torch.nn.functional as F

    hidden = torch.randn(1, runner.config.hidden_size, device=runner.device, dtype=torch.float16)
    lm = runner.weights.lm_head
    fns = {k: v for k, v in ST.record.items() if v}
    fns["empty"] = [functools.partial(launch_empty, (1,), 4)] * 32
    fns["lm_head"] = [functools.partial(F.linear, hidden, lm)] * 4
    graphs = {}
    for name, launches in fns.items():
        for f in launches:  # eager once: compiles the PDL-off builds
            f()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for f in launches:
                f()
        graphs[name] = (g, len(launches))
        KEEP.append(g)
    per: dict = {n: [] for n in graphs}
    for _ in range(args.iso_rounds):
        for n, (g, k) in graphs.items():
            per[n].append(replay_ms(g, args.replays) * 1e3 / k)
    out = {}
    for n, v in per.items():
        cls = n.removeprefix("read_").removeprefix("norm_")
        nbytes = ST.meta.get(cls, {}).get("bytes") if not n.startswith("norm_") else ST.meta["norm"]["bytes"]
        if n == "attn":
            c = runner.config
            nbytes = 511 * 2 * c.kv_size * 2 + (c.q_size + 2 * c.kv_size) * 2  # old K/V rows + the qkv row
        if n == "lm_head":
            nbytes = lm.nbytes
        us = statistics.median(v)
        out[n] = dict(us=us, us_all=[round(x, 3) for x in v], launches=graphs[n][1], bytes=nbytes,
                      GBps=(nbytes / (us * 1e-6) / 1e9) if nbytes else None,
                      frac_copy=(nbytes / (us * 1e-6) / copy_bps) if nbytes else None)  # fmt: skip
        print(f"iso {n:10s} {us:8.2f} us/launch x {graphs[n][1]:2d}  bytes {nbytes}  "
              f"{(out[n]['GBps'] or 0):7.0f} GB/s = {(out[n]['frac_copy'] or 0):.2f} copy", flush=True)  # fmt: skip
    res["iso"] = out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--min-rounds", type=int, default=6)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--iso-rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=170.0, help="seconds: captures, then rounds, then iso")
    ap.add_argument("--tag", default="s15-anatomy")
    ap.add_argument("--selftest", action="store_true", help="CPU interpreter smoke check of every variant")
    args = ap.parse_args()
    if args.selftest:
        selftest(args.variants.split(","))
        return
    from bench_decode import copy_bandwidth
    from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config
    from steps import BLOCK

    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.variants.split(",")
    if names[0] != "base":
        raise SystemExit("--variants must start with base")
    for n in names:
        parse(n)
    dev = torch.device("cuda")
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    runner.decode_fusion = FUSION
    bw = copy_bandwidth(dev)
    c = runner.config
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, triton=triton.__version__, copy_GBps=bw / 1e9, argv=sys.argv,
                     fusion=FUSION, roofline_ms=(weight_bytes(runner.weights, 1) + kv_bytes(c, 512, 2)) / bw * 1e3)  # fmt: skip
    path = args.out / f"{args.tag}.json"
    install(runner.weights)
    prepare(c, dev, torch.float16)
    try:
        print(f"setup {time.time() - t0:.0f} s, copy {bw / 1e9:.0f} GB/s, roofline {res['roofline_ms']:.3f} ms",
              flush=True)  # fmt: skip
        graphs = capture_all(runner, names, res, t0, args.budget)
        res["meta"] = ST.meta
        res["capture_done_s"] = time.time() - t0
        path.write_text(json.dumps(res, indent=1))
        run_rounds(graphs, args, res, path, t0, args.budget)
        res["rounds_done_s"] = time.time() - t0
        path.write_text(json.dumps(res, indent=1))
        iso(runner, args, res, bw)
    finally:
        uninstall()
        res["wall_s"] = time.time() - t0
        path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------------- selftest
def selftest(names: list[str]) -> None:
    """CPU (TRITON_INTERPRET=1): a tiny one-layer int4 Llama through forward_fast with "swiglu+cfin", a split-K row
    GEMV forced for every GEMV and the row attention with rotary: every variant runs, the shipped one matches the
    unpatched forward, the wrappers are hit once per layer, the workspace is left zero by the shipped variant."""
    import pdl_helpers as ph  # type: ignore[import-not-found]
    import triton.runtime.interpreter as interp

    patch = interp._patch_lang_tensor

    def patched(tensor, scope):  # type: ignore[no-untyped-def]
        """numpy >= 2.4 refuses int() of a one-element 1-D array: the interpreter's loop bounds (scalars of shape
        (1,)) then fail; take the element."""
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patched

    import random_model as rm
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.llama_fast import DecodeLayout, forward_fast

    # hidden 256 / intermediate 512 (tiny_int4_decode's 128 would leave the o GEMV one K tile a split at block_k 64;
    # the interpreter runs the row GEMV only with 2+ burst tiles a program)
    c = load_model_config(rm.write_config(rm.Shape(256, 512, 1, 4, 2, 512), Path(tempfile.mkdtemp()) / "tiny"))
    torch.manual_seed(1)
    w = rm.random_weights(c, "int4", torch.device("cpu"), torch.float16)
    d = ph.tiny_decode_inputs(c, "cpu")
    forced = QMMConfig(
        2, 64, 64, 2, 2, 1, False, "hgemvrb"
    )  # (burst, 2 rows: the interpreter fails the look-ahead loop)
    real_pick, real_rr, real_qpick = cf.config_for, llama_fast.row_rope_for, None
    from inlaid_worker.kernels import quant_matmul as qm
    from inlaid_worker.kernels import quant_swiglu as qs

    real_qpick, real_spick = qm.tuned_config, qs.tuned_config
    cf.config_for = lambda x2, w: forced
    qm.tuned_config = qs.tuned_config = lambda x2, w: forced
    llama_fast.row_rope_for = lambda rows, rep, device: {}
    try:

        def run() -> torch.Tensor:
            return forward_fast(w, c, d["tokens"], d["cos"], d["sin"], d["slots"], d["kv"].clone(),
                                DecodeLayout(d["tables"], d["lens"], 1, FUSION), None).float()  # fmt: skip

        ref = run()
        install(w)
        prepare(c, torch.device("cpu"), torch.float16, rows=2)  # (two rows: the interpreter fails M = 1 hgemvr loops)
        for name in names:
            modes, pdl_mode, extra = apply(name)
            ST.counts.clear()
            out = run()
            counts = dict(ST.counts)
            want = {k: 1 for k in ("qkv", "attn", "o", "down", "gu")} | {"norm": 2}
            assert counts == want, (name, counts)
            # the same math (attn nomerge / direct: one partition on the CPU, so the same output too)
            if not extra and all(
                m == "real" or param_mode(k, m) or m in ("nomerge", "direct") for k, m in modes.items()
            ):
                err = float((out - ref).norm() / ref.norm())
                assert err < 1e-2, (name, err)
                ws = quant_common._WORKSPACES[torch.device("cpu")][0]
                assert int((ws != 0).sum()) == 0, name
            print(f"selftest {name:28s} ok counts {counts} finite {bool(torch.isfinite(out).all())}", flush=True)
            quant_common._WORKSPACES[torch.device("cpu")][0].zero_()
        # the read kernel at a burst prefetch of 2 and 4 tiles
        wp = w.layers[0].down.parts[0]
        for pre in (2, 4):
            launch_read(wp, forced, pre)
    finally:
        uninstall()
        cf.config_for, llama_fast.row_rope_for = real_pick, real_rr
        qm.tuned_config, qs.tuned_config = real_qpick, real_spick
    print("selftest passed", flush=True)


if __name__ == "__main__":
    main()
