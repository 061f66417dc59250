"""TMA read floor (helper H2, 2026-11-30): can Hopper bulk tensor copies (TMA into a shared-memory ring, completing
on mbarriers, no registers in flight) read the int4 GEMV's packed words faster than the v6 register loads (best
flat read 7.6 us = 71% of copy bandwidth on the 7B up / down words)? bench/kernels/NOTES.md, v6 and v7 rows.

Kernel (Gluon, sm_90): each program walks its tiles (boxes [BR, BC] of a 2D view of the int32 words) through a
STAGES-deep ring: STAGES boxes issued up front, then per tile: wait on its mbarrier, (CONSUME) load the box from
shared memory into registers and add it to an accumulator, a CTA barrier, and the slot refilled with the tile
STAGES ahead. The result is one int per program, the wrapping sum of its words (so nothing is optimized away,
and the build check sees every tile read exactly once).
  view "flat"  the words as [nwords / 256, 256] (1 KB rows): a box of BR rows is BR KB contiguous;
  view "gemv"  the words as they are, [K / 8, N]: a box is BR word rows (8 * BR weights of K) x BC columns.
  order        "n": tile u -> (row u // TC, col u % TC) (N fastest); "k": (row u % TR, col u // TR) (K fastest);
  assign       "inter": program p takes tiles p, p + P, ... (P = grid); "contig": tiles [p * CH, (p + 1) * CH).
Timing as every kernel bench here: CUDA graph over rotating copies of the words (> 3x L2), median of 10 replays
(bench_kernels.time_rotated); in the same run: the v6 best flat register read (read_kernels, B4096 w8 U4 P528),
the v6 GEMV-grid read (n64 w2, 3 tiles in flight, with and without the split-K epilogue), bf16 cuBLAS and the v7
GEMV picks (hgemvr) at M = 1, 2, 4.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/tma_read.py {compile,bench,report} --out DIR
(compile --shard i --shards S: build this shard's configs only; offline without a GPU: `sass` builds for sm_90)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096)}
SMS = 132


@gluon.jit
def _issue(desc, ring, bars, s, u, pred, TR, TC, ORDER_K: gl.constexpr):
    BR: gl.constexpr = desc.block_type.shape[0]
    BC: gl.constexpr = desc.block_type.shape[1]
    if ORDER_K:
        r = u % TR
        c = u // TR
    else:
        r = u // TC
        c = u % TC
    mbarrier.expect(bars.index(s), desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc, [r * BR, c * BC], bars.index(s), ring.index(s), pred=pred)


@gluon.jit
def _tma_read_kernel(desc, out_ptr, TR, TC, TOTAL, CH, STAGES: gl.constexpr, ORDER_K: gl.constexpr,
                     CONTIG: gl.constexpr, CONSUME: gl.constexpr, LAY: gl.constexpr):  # fmt: skip
    BR: gl.constexpr = desc.block_type.shape[0]
    BC: gl.constexpr = desc.block_type.shape[1]
    pid = gl.program_id(0)
    if CONTIG:
        first = pid * CH
        step = 1
        count = gl.minimum(CH, TOTAL - first)
    else:
        nprog = gl.num_programs(0)
        first = pid
        step = nprog
        count = (TOTAL - pid + nprog - 1) // nprog
    ring = gl.allocate_shared_memory(desc.dtype, [STAGES, BR, BC], desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for j in gl.static_range(STAGES):
        mbarrier.init(bars.index(j), count=1)
    for j in gl.static_range(STAGES):
        _issue(desc, ring, bars, j, first + j * step, j < count, TR, TC, ORDER_K)
    acc = gl.zeros([BR, BC], gl.int32, LAY)
    for i in range(count):
        s = i % STAGES
        mbarrier.wait(bars.index(s), (i // STAGES) & 1)
        if CONSUME:
            acc += ring.index(s).load(LAY)
            gl.thread_barrier()  # every warp has read slot s before it is refilled
        nxt = i + STAGES
        _issue(desc, ring, bars, s, first + nxt * step, nxt < count, TR, TC, ORDER_K)
    for j in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(j))
    tot = gl.sum(gl.sum(acc, axis=1), axis=0)
    gl.store(out_ptr + pid, tot)


def smem_layout() -> gl.NVMMASharedLayout:
    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)


def reg_layout(br: int, bc: int, warps: int) -> gl.BlockedLayout:
    """16-byte shared-memory loads, a warp across up to 128 contiguous columns."""
    tc = min(32, bc // 4)
    return gl.BlockedLayout(size_per_thread=[1, 4], threads_per_warp=[32 // tc, tc], warps_per_cta=[warps, 1],
                            order=[1, 0])  # fmt: skip


def configs() -> list[dict]:
    """The sweep: (view, box, stages, grid, order, assignment, consume, warps)."""
    out: list[dict] = []

    def add(view, br, bc, stages, grid, order, assign, consume=True, warps=4):
        if stages * br * bc * 4 * (2 if grid == "2x" else 1) > 200 * 1024:
            return
        out.append(dict(view=view, br=br, bc=bc, stages=stages, grid=grid, order=order, assign=assign,
                        consume=consume, warps=warps))  # fmt: skip

    # flat: contiguous boxes of 4 / 8 / 16 / 32 KB, persistent grid of 1x / 2x the SMs
    for br in (4, 8, 16, 32):
        for stages in (2, 4, 6, 8, 12):
            for grid in ("1x", "2x"):
                add("flat", br, 256, stages, grid, "n", "inter")
    for br, stages in ((8, 8), (16, 4), (4, 16)):
        add("flat", br, 256, stages, "1x", "n", "contig")
        add("flat", br, 256, stages, "1x", "n", "inter", consume=False, warps=1)
    # GEMV-shaped: boxes of one or two K tiles (16 / 32 word rows) x 64..256 columns
    for br, bc in ((16, 64), (16, 128), (16, 256), (32, 128), (32, 256)):
        for stages in (4, 8):
            for grid in ("1x", "2x"):
                add("gemv", br, bc, stages, grid, "n", "inter")
                add("gemv", br, bc, stages, grid, "k", "contig")
    # non-persistent GEMV-like grid: each program walks K (3 / 6 tiles) of one N tile
    for br, bc, tiles in ((16, 64, 3), (16, 128, 3), (16, 128, 6), (16, 256, 6)):
        for stages in (3, 6):
            if stages <= tiles:
                add("gemv", br, bc, stages, f"t{tiles}", "k", "contig", warps=2 if bc <= 64 else 4)
    return out


def small_configs() -> list[dict]:
    """Call 2: the fastest TMA reads of call 1 (kernels-2026-11-30-tma-read.md) and the pure-TMA (noconsume) ones."""

    def c(view, br, bc, stages, grid, order, assign, consume=True, warps=4):
        return dict(view=view, br=br, bc=bc, stages=stages, grid=grid, order=order, assign=assign, consume=consume,
                    warps=warps)  # fmt: skip

    return [c("flat", 8, 256, 4, "2x", "n", "inter"), c("flat", 16, 256, 4, "1x", "n", "contig"),
            c("flat", 16, 256, 2, "2x", "n", "inter"), c("gemv", 16, 128, 4, "2x", "k", "contig"),
            c("gemv", 16, 128, 3, "t6", "k", "contig"), c("gemv", 16, 256, 3, "t6", "k", "contig"),
            c("flat", 8, 256, 8, "1x", "n", "inter", False, 1), c("flat", 16, 256, 4, "1x", "n", "inter", False, 1),
            c("flat", 4, 256, 16, "1x", "n", "inter", False, 1), c("flat", 16, 256, 4, "2x", "n", "inter", False, 1),
            c("flat", 32, 256, 4, "1x", "n", "inter", False, 1), c("flat", 32, 256, 6, "1x", "n", "inter", False, 1),
            c("flat", 16, 256, 12, "1x", "n", "contig", False, 1),
            # few K splits, deep ring per program (a GEMV with little or no split-K epilogue): up has 32 K tiles
            # (16-row boxes) per column, down 86
            c("gemv", 16, 64, 8, "t32", "k", "contig", True, 2), c("gemv", 16, 64, 12, "t32", "k", "contig", True, 2),
            c("gemv", 16, 64, 8, "t16", "k", "contig", True, 2), c("gemv", 16, 64, 8, "t22", "k", "contig", True, 2),
            c("gemv", 16, 64, 12, "t43", "k", "contig", True, 2), c("gemv", 16, 32, 16, "t32", "k", "contig", True, 1),
            c("gemv", 32, 64, 6, "t16", "k", "contig", True, 2)]  # fmt: skip


SIZE_TMA = (0, 1, 7, 11)  # small_configs() indices timed at every size
SCALES = (0.5, 1, 2, 4)  # x the 7B up words (22.5 MB)


def name(c: dict) -> str:
    return (f"tma {c['view']} box{c['br']}x{c['bc']} ({c['br'] * c['bc'] // 256} KB) st{c['stages']} grid{c['grid']} "
            f"{c['order']}/{c['assign']}{'' if c['consume'] else ' noconsume'} w{c['warps']}")  # fmt: skip


def launch(c: dict, words: torch.Tensor, out: torch.Tensor, descs: dict) -> None:
    """One read of words ([rows, N] int32) by config c; descs caches the host descriptors per (tensor, box)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    view = words.view(-1, 256) if c["view"] == "flat" else words
    key = (words.data_ptr(), c["view"], c["br"], c["bc"])
    if key not in descs:
        descs[key] = TensorDescriptor.from_tensor(view, [c["br"], c["bc"]], smem_layout())
    tr, tc = -(-view.shape[0] // c["br"]), view.shape[1] // c["bc"]
    total = tr * tc
    if c["grid"].startswith("t"):
        grid = -(-total // int(c["grid"][1:]))
    else:
        grid = SMS * (2 if c["grid"] == "2x" else 1)
    ch = -(-total // grid)
    if c["assign"] == "contig":
        grid = -(-total // ch)
    _tma_read_kernel[(grid,)](descs[key], out, tr, tc, total, ch, STAGES=c["stages"], ORDER_K=c["order"] == "k",
                              CONTIG=c["assign"] == "contig", CONSUME=c["consume"],
                              LAY=reg_layout(c["br"], c["bc"], c["warps"]), num_warps=c["warps"])  # fmt: skip


def check(c: dict, words: torch.Tensor, out: torch.Tensor, descs: dict) -> bool | None:
    """Every tile read exactly once: words all zero but one 1 per tile (at a position that varies by tile), so the
    programs' sums add up to the number of tiles. None (unchecked) for configs that do not consume the boxes."""
    if not c["consume"]:
        launch(c, words, out, descs)
        torch.cuda.synchronize()
        return None
    view = words.view(-1, 256) if c["view"] == "flat" else words
    br, bc = c["br"], c["bc"]
    tr, tc = -(-view.shape[0] // br), view.shape[1] // bc
    view.zero_()
    r = torch.arange(tr, device=words.device).repeat_interleave(tc)
    col = torch.arange(tc, device=words.device).repeat(tr)
    pos = (r * tc + col) % (br * bc)
    rows = r * br + pos // bc
    ok = rows < view.shape[0]
    view[rows[ok], (col * bc + pos % bc)[ok]] = 1
    out.zero_()
    launch(c, words, out, descs)
    torch.cuda.synchronize()
    return int(out.sum()) == int(ok.sum())


def compile_phase(out: Path, shard: int, shards: int, cfgs: list[dict]) -> None:
    descs: dict = {}
    scratch = torch.zeros(4096, dtype=torch.int32, device="cuda")
    rows = []
    for name_, (k, n) in SHAPES.items():
        words = torch.zeros(k // 8, n, dtype=torch.int32, device="cuda")
        for i, c in enumerate(cfgs):
            if i % shards != shard:
                continue
            try:
                ok = check(c, words, scratch, descs)
                rows.append(dict(shape=name_, cfg=c, ok=ok))
            except Exception as exc:  # noqa: BLE001 - reported
                rows.append(dict(shape=name_, cfg=c, error=repr(exc)[:400]))
            print(f"[compile {shard}] {name_} {name(c)} {rows[-1].get('ok', rows[-1].get('error'))}", flush=True)
    (out / f"check-{shard}.json").write_text(json.dumps(rows))


def warm_phase(ms: tuple[int, ...], call2: bool) -> None:
    """Compile the v7 hgemvr picks for both shapes (fills Triton's cache while the TMA shards build)."""
    from gemv_h200 import make_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    for shape, (k, n) in SHAPES.items():
        w = make_weight(k, n, 4, False)
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")
            for label, tiles, burst, pin in V7_PICKS.get(m, ()):
                try:
                    launch_hgemvr(
                        x, w, m, 64, 128, -(-(k // 128) // tiles), 2, y, burst=burst, const_stride=True, pin=pin
                    )
                except Exception as exc:  # noqa: BLE001 - reported by the bench phase
                    print("[warm]", shape, m, label, repr(exc)[:200], flush=True)
            if call2 and m >= 2:
                from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

                for cfg in tc_configs(m):
                    try:
                        launch_quant_matmul(x, w, cfg, y)
                    except Exception as exc:  # noqa: BLE001 - reported by the bench phase
                        print("[warm]", shape, m, short(cfg), repr(exc)[:200], flush=True)
    torch.cuda.synchronize()
    print("[warm] done", flush=True)


def bench_phase(out: Path, ms: tuple[int, ...], cfgs: list[dict], call2: bool) -> None:
    from bench_kernels import copies, gptq_bytes, time_rotated
    from device_common import bench_meta
    from gemv_h200 import make_weight
    from read_kernels import launch_read1d, launch_read2d

    meta = bench_meta()
    bad = {(r["shape"], json.dumps(r["cfg"], sort_keys=True)) for p in out.glob("check-*.json")
           for r in json.loads(p.read_text()) if r.get("ok") is False or "error" in r}  # fmt: skip
    rows: list[dict] = []
    scratch = torch.empty(4 * 1024 * 1024, dtype=torch.int32, device="cuda")

    def keep(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))

    for shape, (k, n) in SHAPES.items():
        t0 = time.time()
        ws = [make_weight(k, n, 4, False) for _ in range(copies(k * n / 2))]
        gemv_mb = gptq_bytes(ws[0]) / 1e6
        words_mb = ws[0].qweight.numel() * 4 / 1e6
        qws = [w.qweight for w in ws]
        base = dict(shape=shape, MB=words_mb, gemv_MB=gemv_mb)
        keep(
            dict(
                base,
                what="v6 best flat register read B4096 w8 U4 P528",
                us=time_rotated([lambda q=q: launch_read1d(q.view(-1), 4096, 528, 4, 8, False, scratch) for q in qws]),
            )
        )
        rows_, cols_ = qws[0].shape
        yf = torch.zeros(n, dtype=torch.float16, device="cuda")
        for ep in (False, True):
            split = -(-(rows_ // 16) // 3)
            keep(dict(base, what=f"v6 GEMV-grid register read n64 w2 t3 U3{' +ep' if ep else ''}",
                      us=time_rotated([lambda q=q, e=ep: launch_read2d(q, rows_, cols_, 64, 16, split, 3, 2, False, scratch,
                                                                       yf if e else None) for q in qws])))  # fmt: skip
        descs: dict = {}
        for c in cfgs:
            if (shape, json.dumps(c, sort_keys=True)) in bad:
                keep(dict(base, what=name(c), cfg=c, us=None, error="failed the check or the build"))
                continue
            try:
                us = time_rotated([lambda q=q, c=c: launch(c, q, scratch, descs) for q in qws])
                keep(dict(base, what=name(c), cfg=c, us=us))
            except Exception as exc:  # noqa: BLE001 - reported
                keep(dict(base, what=name(c), cfg=c, us=None, error=repr(exc)[:300]))
        print(f"{shape} reads {time.time() - t0:.1f}s", flush=True)
        gemv_rows(shape, k, n, ws, ms, base, keep, call2)
        del ws, qws, descs
        torch.cuda.empty_cache()
    if call2:
        size_rows(keep, scratch, bad)


def size_rows(keep, scratch: torch.Tensor, bad: set) -> None:
    """Read time vs bytes (flat reads of 0.5-4x the 7B up words) and an empty kernel: a fixed cost per kernel plus
    a streaming rate, fitted in the report."""
    from bench_kernels import copies, time_rotated
    from gemv_floor import _empty_kernel
    from read_kernels import launch_read1d

    one = torch.zeros(1, device="cuda")
    keep(dict(shape="size", what="empty kernel", us=time_rotated([lambda: _empty_kernel[(1,)](one)] * 32), MB=0.0,
              gemv_MB=0.0))  # fmt: skip
    words = 4096 * 11008 // 8
    cs = small_configs()
    for scale in SCALES:
        nw = int(words * scale)
        srcs = [torch.randint(-(2**31), 2**31 - 1, (nw // 256, 256), dtype=torch.int32, device="cuda")
                for _ in range(copies(nw * 4))]  # fmt: skip
        base = dict(shape="size", scale=scale, MB=nw * 4 / 1e6, gemv_MB=nw * 4 / 1e6)
        for progs in (528, 1056):
            keep(dict(base, what=f"register flat read B4096 w8 U4 P{progs}",
                      us=time_rotated([lambda q=q, p=progs: launch_read1d(q.view(-1), 4096, p, 4, 8, False, scratch)
                                       for q in srcs])))  # fmt: skip
        descs: dict = {}
        for i in SIZE_TMA:
            c = cs[i]
            if ("7B up 4096x11008", json.dumps(c, sort_keys=True)) in bad:
                continue
            keep(dict(base, what=name(c), cfg=c, us=time_rotated([lambda q=q, c=c: launch(c, q, scratch, descs)
                                                                   for q in srcs])))  # fmt: skip
        del srcs, descs
        torch.cuda.empty_cache()


V7_PICKS = {  # (M bucket) -> (label, kind, K tiles per program, burst, pin): the v7 run's winners per shape
    1: (("hgemvr t4", 4, False, False), ("hgemvrq t6", 6, False, True), ("hgemvrb t3", 3, True, False)),
    2: (("hgemvr t6", 6, False, False),),
    4: (("hgemvr t8", 8, False, False), ("hgemvr t6", 6, False, False)),
}


def tc_configs(m: int) -> list:
    """quant_tcg configs that won M = 8 / 16 in the tc run (kernels-2026-11-29-tc.md), also tried at M = 2 / 4
    (8-row tile, rows past M masked)."""
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    if m <= 8:
        return [QMMConfig(8, 64, 128, 4, 4, 4, True, "tc2"), QMMConfig(8, 64, 128, 8, 4, 4, True, "tc2"),
                QMMConfig(8, 64, 128, 8, 4, 1, True, "tc")]  # fmt: skip
    return [QMMConfig(16, 128, 128, 4, 4, 4, True, "tc2"), QMMConfig(16, 64, 128, 8, 4, 1, True, "tc"),
            QMMConfig(16, 64, 128, 4, 4, 4, True, "tc2"), QMMConfig(16, 64, 128, 8, 4, 4, True, "tc2")]  # fmt: skip


def short(cfg) -> str:
    return f"{cfg.kind} m{cfg.block_m} n{cfg.block_n} s{cfg.split_k} st{cfg.num_stages}"


def gemv_rows(shape: str, k: int, n: int, ws: list, ms: tuple[int, ...], base: dict, keep, call2: bool = False) -> None:
    """bf16 cuBLAS and the v7 hgemvr picks at each M, same run; call2: also quant_tcg configs at M >= 2, with the
    relative error of every kernel against the fp32 product of the dequantized weight."""
    from bench_kernels import copies, time_rotated
    from device_common import rel
    from gemv_h200 import reference

    w_bf16 = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        xb = x.to(torch.bfloat16)
        keep(dict(base, M=m, what="bf16 cuBLAS", us=time_rotated([lambda w=w: xb @ w for w in w_bf16])))
        try:
            from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
        except Exception as exc:  # noqa: BLE001 - another helper's file may be mid-edit
            keep(dict(base, M=m, what="hgemvr import", us=None, error=repr(exc)[:300]))
            continue
        y = torch.empty(m, n, dtype=torch.float16, device="cuda")
        for label, tiles, burst, pin in V7_PICKS.get(m, ()):
            split = -(-(k // 128) // tiles)
            try:
                us = time_rotated([lambda w=w, s=split, b=burst, p=pin: launch_hgemvr(
                    x, w, m, 64, 128, s, 2, y, burst=b, const_stride=True, pin=p) for w in ws])  # fmt: skip
                err = None
                if call2:
                    launch_hgemvr(x, ws[0], m, 64, 128, split, 2, y, burst=burst, const_stride=True, pin=pin)
                    err = rel(y, reference(x, ws[0]))
                keep(dict(base, M=m, what=label, us=us, err=err))
            except Exception as exc:  # noqa: BLE001 - reported
                keep(dict(base, M=m, what=label, us=None, error=repr(exc)[:300]))
        if not call2 or m < 2:
            continue
        from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

        for cfg in tc_configs(m):
            try:
                us = time_rotated([lambda w=w, c=cfg: launch_quant_matmul(x, w, c, y) for w in ws])
                launch_quant_matmul(x, ws[0], cfg, y)
                keep(dict(base, M=m, what=short(cfg), us=us, err=rel(y, reference(x, ws[0]))))
            except Exception as exc:  # noqa: BLE001 - reported
                keep(dict(base, M=m, what=short(cfg), us=None, error=repr(exc)[:300]))
    del w_bf16


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    from device_common import report_head

    b = json.loads((out / "bench.json").read_text())
    meta, rows = b["meta"], b["rows"]
    gbps = meta["copy_GBps"]
    checks = [r for p in sorted(out.glob("check-*.json")) for r in json.loads(p.read_text())]
    for r in rows:
        if r.get("us"):
            r["pct_copy_words"] = 100 * r["MB"] * 1e3 / r["us"] / gbps
            r["pct_copy_gemv"] = 100 * r["gemv_MB"] * 1e3 / r["us"] / gbps
    md = [f"# TMA read floor of the int4 GEMV's words (helper H2), {meta.get('date', '')}", "",
          *report_head(meta, command), "",
          "Times in us (CUDA graph over rotating copies of the words, > 3x L2, median of 10 replays). % copy (words) = "
          "packed-word bytes / time / copy bandwidth; (GEMV) = words + scales + zeros at this time. tma = Gluon "
          "TMA ring (tma_read.py docstring): view flat (1 KB rows) or gemv ([K/8, N]); box rows x cols (KB); st = "
          "ring stages; grid 1x / 2x = 132 / 264 persistent programs, tN = one program per N tiles"
          " of a K-walk; order n / k = N- / K-fastest tiles; inter / contig = strided / contiguous tiles per program.", ""]  # fmt: skip
    for shape in SHAPES:
        mine = [r for r in rows if r["shape"] == shape and "M" not in r]
        ok = sorted((r for r in mine if r.get("us")), key=lambda r: r["us"])
        md += [f"## {shape}", "", "| read | us | % copy (words) | % copy (GEMV bytes) |", "|---|---|---|---|"]
        md += [f"| {r['what']} | {r['us']:.2f} | {r['pct_copy_words']:.0f}% | {r['pct_copy_gemv']:.0f}% |" for r in ok]
        md += [f"| {r['what']} | failed: {r.get('error', '')[:120]} | - | - |" for r in mine if not r.get("us")]
        gem = [r for r in rows if r["shape"] == shape and "M" in r]
        if gem:
            bf = {r["M"]: r["us"] for r in gem if r["what"] == "bf16 cuBLAS" and r.get("us")}
            md += ["", "| M | kernel | us | % copy (GEMV bytes) | x bf16 | rel err |", "|---|---|---|---|---|---|"]
            md += [f"| {r['M']} | {r['what']} | {r['us']:.2f} | {r['pct_copy_gemv']:.0f}% | "
                   f"{bf.get(r['M'], 0) / r['us']:.2f}x | {fmt_err(r)} |"
                   for r in gem if r.get("us")]  # fmt: skip
            md += [
                f"| {r['M']} | {r['what']} | failed: {r.get('error', '')[:150]} | - | - | - |"
                for r in gem
                if not r.get("us")
            ]
        md.append("")
    md += size_report(rows)
    fails = [r for r in checks if r.get("ok") is False or "error" in r]
    md.append(f"Read checks (each tile's marker word counted once; noconsume configs unchecked): "
              f"{len(checks) - len(fails)} of {len(checks)} passed"
              + (f"; failed: {[(r['shape'], name(r['cfg']), r.get('error', '')[:100]) for r in fails][:8]}" if fails else ""))  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{stem}.md").write_text("\n".join(md) + "\n")
    (dest / f"{stem}.json").write_text(
        json.dumps(dict(meta=dict(meta, command=command), rows=rows, checks=checks), indent=1)
    )
    shown = 0
    for line in md:  # stdout: everything but the TMA rows past the 12 fastest of each shape
        shown = 0 if line.startswith("## ") else shown + line.startswith("| tma")
        if shown <= 12 or not line.startswith("| tma"):
            print(line)


def fmt_err(r: dict) -> str:
    return "-" if r.get("err") is None else f"{r['err']:.1e}"


def size_report(rows: list[dict]) -> list[str]:
    """Call 2's read time vs bytes: per read kind, a least-squares line us = fixed + MB / rate."""
    sz = [r for r in rows if r["shape"] == "size" and r.get("us")]
    if not sz:
        return []
    md = ["## Read time vs bytes (flat reads of 0.5-4x the 7B up words; fit us = fixed + bytes / rate)", "",
          "| read | " + " | ".join(f"{s}x" for s in SCALES) + " | fixed us | rate GB/s |",
          "|---|" + "---|" * (len(SCALES) + 2)]  # fmt: skip
    empty = [r for r in sz if r["what"] == "empty kernel"]
    for what in dict.fromkeys(r["what"] for r in sz if r["what"] != "empty kernel"):
        pts = sorted((r["MB"], r["us"]) for r in sz if r["what"] == what)
        by = {r["scale"]: r["us"] for r in sz if r["what"] == what}
        n = len(pts)
        mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
        var = sum((p[0] - mx) ** 2 for p in pts)
        slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else float("nan")
        fixed = my - slope * mx
        md.append(f"| {what} | " + " | ".join(f"{by[s]:.2f}" if s in by else "-" for s in SCALES)
                  + f" | {fixed:.2f} | {1e3 / slope if slope else float('nan'):.0f} |")  # fmt: skip
    if empty:
        md += ["", f"Empty kernel in the graph: {empty[0]['us']:.2f} us per launch."]
    return md + [""]


def sass(args: list[str]) -> None:
    """Offline sm_90 builds of a few configs (no GPU): shared memory, registers, the TMA instructions in the SASS."""
    import os
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from triton.runtime.jit import mangle_type

    bin_ = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    cs = configs()
    picks = [cs[int(a)] for a in args] if args else cs[:2] + cs[-2:]
    for c in picks:
        fn = _tma_read_kernel
        d = TensorDescriptor.from_tensor(torch.zeros(64, 256, dtype=torch.int32), [c["br"], c["bc"]], smem_layout())
        consts = dict(STAGES=c["stages"], ORDER_K=c["order"] == "k", CONTIG=c["assign"] == "contig",
                      CONSUME=c["consume"], LAY=reg_layout(c["br"], c["bc"], c["warps"]))  # fmt: skip
        sig = {a: "constexpr" if a in consts else ("*i32" if a == "out_ptr" else mangle_type(d) if a == "desc" else "i32")
               for a in fn.arg_names}  # fmt: skip
        src = GluonASTSource(fn, sig, constexprs=consts, attrs={})
        ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=c["warps"]))
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(ck.asm["cubin"])
            f.flush()
            s = subprocess.run(
                [os.path.join(bin_, "cuobjdump"), "-sass", f.name], capture_output=True, text=True
            ).stdout
        print(name(c), "smem", ck.metadata.shared, "UTMALDG", s.count("UTMALDG"), "SYNCS", s.count("SYNCS"),
              "LDS", s.count("LDS"), flush=True)  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["sass"]:
        sass(sys.argv[2:])
        return
    from device_common import device_parser, run_phase

    ap = device_parser(("compile", "warm", "bench"), "bash bench/kernels/tma_h200.sh", "kernels-2026-11-30-tma-read")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--ms", default="1,2,4,8,16")
    ap.add_argument("--call2", action="store_true", help="the second call's set: small_configs, sizes, tc rows")

    def ms(a):
        return tuple(int(m) for m in a.ms.split(","))

    def cfgs(a):
        return small_configs() if a.call2 else configs()

    run_phase(ap, dict(compile=lambda a: compile_phase(a.out, a.shard, a.shards, cfgs(a)),
                       warm=lambda a: warm_phase(ms(a), a.call2),
                       bench=lambda a: bench_phase(a.out, ms(a), cfgs(a), a.call2)), report)  # fmt: skip


if __name__ == "__main__":
    main()
