"""L2 prefetch of the next GEMVs' weights from the decode step's latency-bound kernels (attention, add + RMSNorm).

Why (issue 4): at small batches the decode step is a chain of weight-streaming GEMVs and latency-bound kernels
(attention ~6 us a layer at 512 tokens with ~2 us of KV bytes; add + RMSNorm ~1.3 us) during which DRAM is mostly
idle. The GEMVs' weights are static (no kernel of a step writes them), so a latency-bound kernel may ask the L2 to
fetch the next GEMVs' bytes before its own PDL wait (kernels.pdl's rule list allows weight reads before the wait; a
prefetch reads nothing into the program and writes nothing, it is only a hint: outputs are bit-identical with it
on or off). The GEMV then reads part of its bytes from L2.

A prefetch plan is a few descriptors (Desc): `count` byte ranges of `length` bytes at addr + i * stride, clipped to
[addr, end), issued in chunks of `chunk` bytes (everything a multiple of 16, as cp.async.bulk needs). gemv_descs
builds the descriptors of one GEMV's tiles [lo, hi) of EVERY split-K program (the same fraction of each program's
K range, so no program is left with more DRAM bytes than the others): the packed words, and the scales / zeros rows
of those groups. A kernel takes up to MAX_DESC (6) descriptors as scalar arguments (args(); no table to load, so
issuing costs no dependent memory access) and spreads their chunks over all its threads (prefetch()).

Methods (constexpr PF_METHOD): 0 off; 1 `cp.async.bulk.prefetch.L2.global` (sm_90 TMA, one instruction a chunk);
2 the same with an L2::evict_last cache policy; 3 per-line `prefetch.global.L2::evict_last` (one instruction per
128 bytes). Under TRITON_INTERPRET nothing is issued (the interpreter cannot run inline asm).

Measured on the H200 (bench/results/kernels-2026-11-30-s13-l2pf.md and -run1.md, session 13, two runs, variants
alternating on one runner, 7B int4, 512 tokens, PDL mode 1): it does NOT pay, so SETTING stays None (off). The step
got slower in every variant and every round: batch 1 (1.567 ms off) 1.035-1.13x with bulk prefetches (1.42x per
line), batch 2 1.014-1.08x, batch 4 (norm prefetches only) 1.01-1.03x. Why (the chains of 32 layers' real kernels):
the windows are not idle. Under PDL the o GEMV (burst: all its tiles before its wait) already streams its 8.4 MB
during the attention, which itself reads ~8.4 MB of KV; the gate/up GEMV's first tiles stream during the norm. And
the latency-bound kernels pay for the extra traffic: the attention alone 6.39 -> 7.17 us a layer when it prefetches
o (7.25 issued after its KV loop, 7.62 with a quarter of gate/up instead), the norm 1.09 -> 2.19 us prefetching a
quarter of gate/up, while the GEMVs read no faster (o's share of attention + o 4.24 -> 5.33 us; gate/up 15.58 ->
16.03 us).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import triton
import triton.language as tl

MAX_DESC = 6
METHODS = (0, 1, 2, 3)
_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@dataclass(frozen=True)
class Desc:
    """`count` ranges of `length` bytes at addr + i * stride, none past `end`, prefetched in `chunk`-byte pieces."""

    addr: int
    stride: int
    count: int
    length: int
    end: int
    chunk: int

    def chunks(self) -> int:
        return self.count * -(-self.length // self.chunk)

    def ranges(self) -> list[tuple[int, int]]:
        """The (start, stop) byte ranges it covers (clipped to end; empty ones left out): for tests and accounting."""
        out = []
        for i in range(self.count):
            a = self.addr + i * self.stride
            b = min(a + self.length, self.end)
            if b > a:
                out.append((a, b))
        return out

    def nbytes(self) -> int:
        return sum(b - a for a, b in self.ranges())


def _round16(v: int) -> int:
    return max(16, (v + 15) // 16 * 16)


def _rows_desc(base: int, row_bytes: int, rows_total: int, first: int, step: int, count: int, n_rows: int,
               chunk: int) -> Desc | None:  # fmt: skip
    """Rows [first + i * step, + n_rows) of a row-major [rows_total, row_bytes] tensor for i < count (clipped)."""
    if n_rows <= 0 or count <= 0 or row_bytes % 16:
        return None
    length = n_rows * row_bytes
    return Desc(
        base + first * row_bytes,
        step * row_bytes,
        count,
        length,
        base + rows_total * row_bytes,
        min(_round16(chunk), length),
    )


def gemv_descs(w, split: int, iters: int, block_k: int, lo: float, hi: float, chunk: int = 16384) -> list[Desc]:  # type: ignore[no-untyped-def]
    """Descriptors of the K tiles [round(lo * iters), round(hi * iters)) of every split-K program of a GEMV on the
    GPTQ weight w (gptq_packing.GPTQWeight: qweight [K * bits / 32, N] int32, scales [K / g, N], qzeros [K / g, *]),
    split programs along K of iters tiles of block_k each (quant_common.split_iters): its packed words, and the
    scales and zeros rows of those tiles' groups (where the groups of each program's range start at a fixed stride;
    else all of the scales and zeros). Only row-major (contiguous) tensors; anything else gets no descriptor."""
    t0, t1 = round(lo * iters), round(hi * iters)
    t1 = min(t1, iters)
    if t1 <= t0:
        return []
    out: list[Desc] = []
    q = w.qweight
    k = w.in_features
    if q.dim() == 2 and q.is_contiguous() and (block_k * w.bits) % 32 == 0:
        rows_tile = block_k * w.bits // 32  # word rows of one K tile
        d = _rows_desc(q.data_ptr(), q.shape[1] * q.element_size(), q.shape[0], t0 * rows_tile, iters * rows_tile,
                       split, (t1 - t0) * rows_tile, chunk)  # fmt: skip
        if d is not None:
            out.append(d)
    g = w.group_size
    for t in (w.scales, w.qzeros):
        if t.dim() != 2 or not t.is_contiguous():
            continue
        row_bytes = t.shape[1] * t.element_size()
        if g % block_k == 0 and (iters * block_k) % g == 0:  # the groups of every program's range at a fixed stride
            first, last = (t0 * block_k) // g, -(-(t1 * block_k) // g)
            d = _rows_desc(t.data_ptr(), row_bytes, t.shape[0], first, iters * block_k // g, split, last - first,
                           chunk)  # fmt: skip
        elif block_k % g == 0 and (iters * block_k) % g == 0:
            per = block_k // g
            d = _rows_desc(t.data_ptr(), row_bytes, t.shape[0], t0 * per, iters * per, split, (t1 - t0) * per, chunk)
        else:  # all of it (small: 1.6% of the packed words at g128)
            d = _rows_desc(t.data_ptr(), row_bytes, t.shape[0], 0, 0, 1, k // g, chunk)
        if d is not None:
            out.append(d)
    return out


def merge(*plans: list[Desc]) -> list[Desc]:
    """Descriptors of several plans, at most MAX_DESC: the ones past that are dropped (the first plans win)."""
    out = [d for p in plans for d in p]
    return out[:MAX_DESC]


def with_chunk(descs: list[Desc], chunk: int) -> list[Desc]:
    return [replace(d, chunk=min(_round16(chunk), d.length)) for d in descs]


def args(descs: list[Desc] | tuple[Desc, ...], method: int) -> dict:
    """The launch keyword arguments of a kernel that takes prefetch() parameters: pf0 .. pf{MAX_DESC - 1} (6 ints
    each: addr, stride, count, length, end, chunk), PF_ND and PF_METHOD (0 = off; then every int is 0)."""
    if method not in METHODS:
        raise ValueError(f"prefetch method must be one of {METHODS}, got {method!r}")
    if len(descs) > MAX_DESC:
        raise ValueError(f"at most {MAX_DESC} prefetch descriptors, got {len(descs)}")
    ds = list(descs) if method else []
    kw: dict = {}
    for i in range(MAX_DESC):
        d = ds[i] if i < len(ds) else None
        for name, v in zip("ascled", (d.addr, d.stride, d.count, d.length, d.end, d.chunk) if d else (0,) * 6,
                           strict=True):  # fmt: skip
            kw[f"pf{i}{name}"] = v
    kw["PF_ND"] = len(ds)
    kw["PF_METHOD"] = method if ds else 0
    return kw


OFF = args((), 0)

# the PTX of one prefetch of $2 bytes at address $1 ($2 <= 0: nothing); $0 a dummy output (inline asm needs one)
_BULK = tl.constexpr("""{
.reg .pred p;
setp.gt.s32 p, $2, 0;
@p cp.async.bulk.prefetch.L2.global [$1], $2;
mov.u32 $0, 0;
}""")
_BULK_LAST = tl.constexpr("""{
.reg .pred p;
.reg .b64 pol;
setp.gt.s32 p, $2, 0;
createpolicy.fractional.L2::evict_last.b64 pol, 1.0;
@p cp.async.bulk.prefetch.L2.global.L2::cache_hint [$1], $2, pol;
mov.u32 $0, 0;
}""")
_LINE = tl.constexpr("""{
.reg .pred p;
setp.gt.s32 p, $2, 0;
@p prefetch.global.L2::evict_last [$1];
mov.u32 $0, 0;
}""")


@triton.jit
def _issue(a, n, METHOD: tl.constexpr):
    """One prefetch per element: n bytes at address a (int64; n int32, <= 0: none)."""
    if METHOD == 1:
        tl.inline_asm_elementwise(_BULK, "=r,l,r", [a, n], dtype=tl.int32, is_pure=False, pack=1)
    elif METHOD == 2:
        tl.inline_asm_elementwise(_BULK_LAST, "=r,l,r", [a, n], dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise(_LINE, "=r,l,r", [a, n], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _desc(j0, n_thr, addr, stride, count, length, end, chunk, METHOD: tl.constexpr):
    """The chunks of one descriptor over the threads: chunk j goes to the thread whose j0 is j modulo n_thr."""
    cpr = (length + chunk - 1) // chunk  # chunks a range
    total = count * cpr
    for base in range(0, total, n_thr):
        j = j0 + base  # int32 (a plan has far fewer than 2^31 chunks): cheap division
        i = j // cpr
        kk = j - i * cpr
        a = addr + i.to(tl.int64) * stride + kk.to(tl.int64) * chunk
        n = tl.minimum(tl.minimum(length - kk * chunk, chunk), end - a)
        n = tl.where(j < total, n, 0).to(tl.int32)
        if METHOD == 3:  # one instruction per 128-byte line of the chunk
            for off in range(0, chunk, 128):
                _issue(a + off, n - off, METHOD)
        else:
            _issue(a, n, METHOD)


@triton.jit
def prefetch(pid, nprog, pf0a, pf0s, pf0c, pf0l, pf0e, pf0d, pf1a, pf1s, pf1c, pf1l, pf1e, pf1d, pf2a, pf2s, pf2c, pf2l, pf2e, pf2d, pf3a, pf3s, pf3c, pf3l, pf3e, pf3d, pf4a, pf4s, pf4c, pf4l, pf4e, pf4d, pf5a, pf5s, pf5c, pf5l, pf5e, pf5d,
             PF_ND: tl.constexpr, PF_METHOD: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Issue program pid's share (of nprog programs, BLOCK threads each: BLOCK = 32 * num_warps, one element a
    thread) of the descriptors' prefetches. The first chunks go to lane 0 of every program, so a plan with fewer
    chunks than programs still spreads over all the SMs. Nothing without PF_METHOD / PF_ND or when interpreting."""
    if PF_METHOD != 0 and PF_ND > 0 and not _INTERPRETED:
        j0 = tl.arange(0, BLOCK) * nprog + pid
        n_thr = nprog * BLOCK
        _desc(j0, n_thr, pf0a, pf0s, pf0c, pf0l, pf0e, pf0d, PF_METHOD)
        if PF_ND >= 2:
            _desc(j0, n_thr, pf1a, pf1s, pf1c, pf1l, pf1e, pf1d, PF_METHOD)
        if PF_ND >= 3:
            _desc(j0, n_thr, pf2a, pf2s, pf2c, pf2l, pf2e, pf2d, PF_METHOD)
        if PF_ND >= 4:
            _desc(j0, n_thr, pf3a, pf3s, pf3c, pf3l, pf3e, pf3d, PF_METHOD)
        if PF_ND >= 5:
            _desc(j0, n_thr, pf4a, pf4s, pf4c, pf4l, pf4e, pf4d, PF_METHOD)
        if PF_ND >= 6:
            _desc(j0, n_thr, pf5a, pf5s, pf5c, pf5l, pf5e, pf5d, PF_METHOD)


# ---- the decode step's plan (model.llama_fast) -------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What the decode step prefetches, per layer (fractions of each GEMV's tiles, the same of every split-K program):
    the attention: o's tiles [0, attn_o) and gate/up's [0, attn_gu); the add + RMSNorm before gate/up: gate/up's
    [attn_gu, attn_gu + norm_gu); the next layer's input add + RMSNorm: its qkv's [0, norm_qkv). norm_progs: extra
    programs the norm kernel launches only to issue prefetches (its rows are few; one SM cannot issue megabytes
    quickly); chunk: bytes a prefetch instruction (bulk methods)."""

    method: int = 1
    attn_o: float = 1.0
    attn_gu: float = 0.0
    norm_gu: float = 0.0
    norm_qkv: float = 0.0
    norm_progs: int = 64
    chunk: int = 16384
    attn_end: int = 0  # 1: the attention issues its prefetches after its KV loop, not before its wait

    @property
    def on(self) -> bool:
        return self.method != 0 and (self.attn_o > 0 or self.attn_gu > 0 or self.norm_gu > 0 or self.norm_qkv > 0)


_KEYS = {"m": "method", "o": "attn_o", "agu": "attn_gu", "ngu": "norm_gu", "nq": "norm_qkv", "np": "norm_progs",
         "c": "chunk", "ae": "attn_end"}  # fmt: skip


def parse(text: str) -> Setting | None:
    """A Setting from "m1,o1,agu.25,ngu.25,nq.25,np64,c16384" (keys _KEYS, any subset; the rest Setting's defaults);
    "" / "off" / "0": None. A bad key or value is a ValueError."""
    text = text.strip().lower()
    if text in ("", "off", "0", "none"):
        return None
    if text in ("on", "1"):
        return Setting()
    kw: dict = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key = next((k for k in sorted(_KEYS, key=len, reverse=True) if item.startswith(k)), None)
        if key is None:
            raise ValueError(f"L2 prefetch setting: unknown item {item!r} (keys {sorted(_KEYS)})")
        field, raw = _KEYS[key], item[len(key) :]
        try:
            kw[field] = int(raw) if field in ("method", "norm_progs", "chunk", "attn_end") else float(raw)
        except ValueError:
            raise ValueError(f"L2 prefetch setting: {item!r} has no number after {key!r}") from None
    s = Setting(**kw)
    if s.method not in METHODS or s.norm_progs < 0 or s.chunk < 16:
        raise ValueError(f"L2 prefetch setting out of range: {s}")
    for f in (s.attn_o, s.attn_gu, s.norm_gu, s.norm_qkv):
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"L2 prefetch fractions lie in [0, 1]: {s}")
    return s


# the setting decode steps use (model.llama_fast reads it when a step runs, i.e. at a decode graph's capture; it is no
# part of a graph's key): None = off, the default. Only benchmarks set it (bench/kernels/s13_l2pf.py): measured slower
# in every variant (module docstring), so there is no environment switch
SETTING: Setting | None = None
