""" "+dn2"'s "shfl" formation (quant_hgemvr DNORM2 2) run on the CPU as PTX: a small emulator of the instructions its
two asm strings use (and _x_chunks' 16-byte load + prmt re-pairing, _XLOAD4_RO4) executes them per lane, the warp in
lock step (shfl.sync.idx reads the other lanes' registers), for the 2 warps x 32 lanes of the verified layout (lane
bit 4 and the warp pick the word row, lanes 0-15 of a half-warp share it: quant_hgemvr.shfl_ttgir_problems). Memory is
a byte array holding the producer's fp32 sums, h, and the pair-ordered norm weight (model.weights.norm_pairs), with
numbered values: each pass numbers one input by its K index (the other two neutral), so every u word names the K
indices it came from. Checked: each lane's loads hit quant_hgemvr.ShflPlan.lane's offsets (the pure helper the PTX
generator takes its constants from), and the 16 output words of every lane equal _x_chunks' pair order
(x[k + i], x[k + 4 + i]), k = kr + 32 c, both by formula and as the emulated _XLOAD4_RO4 of u stored in memory, with
u = fp16(fp16(h + fp16(s)) w) rounded as numpy does it in float64 (random values too). Mis-ordered generators (cvt's
halves swapped, h's halves swapped, wrong mad constant or +16 / +8 offsets, no 16-lane segments, permuted shuffle
sources) must fail. Pure Python (milliseconds): no Triton compile, no interpreter.
"""

from __future__ import annotations

import re
import struct
from dataclasses import replace

import numpy as np
import pytest
import torch

K = 256  # two tiles of BLOCK_K 128; the emulated one is the second (kt = 128)
KT = 128
BASE = {"s": 0x1000, "h": 0x2000, "w": 0x3000, "u": 0x4000}  # 16-byte aligned buffers in one byte array
MEM_SIZE = 0x5000
M32, M64 = 0xFFFFFFFF, (1 << 64) - 1


def _f16_bits(x: float) -> int:
    return int(np.array([x], dtype=np.float16).view(np.uint16)[0])


def _f16(bits: int) -> float:
    return float(np.array([bits & 0xFFFF], dtype=np.uint16).view(np.float16)[0])


def _f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & M32))[0]


def _h2(a: int, b: int, op: str) -> int:
    """fma-free half2 add / mul with one rn rounding per half (float64 holds either result exactly)."""
    out = 0
    for sh in (0, 16):
        x, y = _f16((a >> sh) & 0xFFFF), _f16((b >> sh) & 0xFFFF)
        out |= _f16_bits(x + y if op == "add" else x * y) << sh
    return out


def _split(ops: str) -> list[str]:
    """Operands at top-level commas ({a, b} and [p+16] kept whole)."""
    out, depth, cur = [], 0, ""
    for c in ops:
        depth += (c in "{[") - (c in "}]")
        if c == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    return [*out, cur.strip()]


def _instructions(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line in ("{", "}", "") or line.startswith(".reg"):
            continue
        assert line.endswith(";"), line
        op, _, ops = line[:-1].partition(" ")
        out.append((op, _split(ops)))
    return out


class Misaligned(Exception):
    """A load not aligned to its width (the GPU faults)."""


class Warp:
    """32 lanes' registers ($n and named, raw bits) executing PTX in lock step over a byte-array memory; every load
    is recorded per lane (address, width) and must be aligned to its width."""

    def __init__(self, warp: int, mem: bytearray) -> None:
        self.warp, self.mem = warp, mem
        self.regs: list[dict[str, int]] = [{} for _ in range(32)]
        self.loads: list[list[tuple[int, int]]] = [[] for _ in range(32)]

    def val(self, lane: int, tok: str) -> int:
        if tok == "%laneid":
            return lane
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", tok):
            return int(tok, 0)
        return self.regs[lane][tok]

    def load(self, lane: int, addr_tok: str, width: int) -> int:
        base, _, off = addr_tok.strip("[]").partition("+")
        addr = self.val(lane, base) + (int(off) if off else 0)
        if addr % width:
            raise Misaligned(f"lane {lane}: a {width}-byte load at {addr:#x}")
        self.loads[lane].append((addr, width))
        return int.from_bytes(self.mem[addr : addr + width], "little")

    def run(self, text: str) -> None:
        for op, a in _instructions(text):
            if op == "shfl.sync.idx.b32":  # d, a, b, c, membermask (PTX ISA: segmask = c[12:8], clamp = c[4:0])
                src = [self.val(lane, a[1]) for lane in range(32)]
                for lane in range(32):
                    b, c = self.val(lane, a[2]), self.val(lane, a[3])
                    seg, clamp = (c >> 8) & 0x1F, c & 0x1F
                    lo = lane & seg
                    j = lo | (b & ~seg & 0x1F)
                    self.regs[lane][a[0]] = src[j] if j <= (lo | (clamp & ~seg)) else src[lane]
                continue
            for lane in range(32):
                self._step(lane, op, a)

    def _step(self, lane: int, op: str, a: list[str]) -> None:
        r, v = self.regs[lane], lambda t: self.val(lane, t)
        if op == "ld.global.v4.b32":
            words = self.load(lane, a[1], 16)
            for n, d in enumerate(_split(a[0].strip("{}"))):
                r[d] = (words >> (32 * n)) & M32
            return
        d = a[0]
        if op == "mov.u32":
            r[d] = v(a[1]) & M32
        elif op == "mov.b32":  # {lo, hi} of two 16-bit halves
            lo, hi = _split(a[1].strip("{}"))
            r[d] = (v(lo) & 0xFFFF) | ((v(hi) & 0xFFFF) << 16)
        elif op == "and.b32":
            r[d] = v(a[1]) & v(a[2]) & M32
        elif op == "shr.u32":
            r[d] = (v(a[1]) & M32) >> v(a[2])
        elif op == "add.u32":
            r[d] = (v(a[1]) + v(a[2])) & M32
        elif op == "mad.lo.u32":
            r[d] = (v(a[1]) * v(a[2]) + v(a[3])) & M32
        elif op == "mul.wide.u32":
            r[d] = (v(a[1]) & M32) * (v(a[2]) & M32)
        elif op == "add.s64":
            r[d] = (v(a[1]) + v(a[2])) & M64
        elif op in ("ld.global.f32", "ld.global.b32"):
            r[d] = self.load(lane, a[1], 4)
        elif op == "ld.global.b16":
            r[d] = self.load(lane, a[1], 2)
        elif op == "prmt.b32":  # default mode: byte n of d = byte sel[n] of {b, a} (a: bytes 0-3)
            src, sel = v(a[1]) | (v(a[2]) << 32), v(a[3])
            r[d] = sum(((src >> (8 * ((sel >> (4 * n)) & 7))) & 0xFF) << (8 * n) for n in range(4))
        elif op == "cvt.rn.f16x2.f32":  # d = {upper: a, lower: b}
            r[d] = (_f16_bits(_f32(v(a[1]))) << 16) | _f16_bits(_f32(v(a[2])))
        elif op in ("add.rn.f16x2", "mul.rn.f16x2"):
            r[d] = _h2(v(a[1]), v(a[2]), op[:3])
        else:
            raise NotImplementedError(op)


def _memory(s: np.ndarray, h: np.ndarray, w: np.ndarray) -> bytearray:
    from inlaid_worker.model.weights import norm_pairs

    pairs = norm_pairs(torch.from_numpy(w.astype(np.float16)))
    assert pairs is not None
    mem = bytearray(MEM_SIZE)
    for name, arr in (("s", s.astype(np.float32)), ("h", h.astype(np.float16)), ("w", pairs.numpy())):
        raw = arr.tobytes()
        mem[BASE[name] : BASE[name] + len(raw)] = raw
    return mem


def _u(s: np.ndarray, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """u = fp16(fp16(h + fp16(s)) w), each operation rounded once (the reference the PTX must match)."""
    hp = h.astype(np.float16).astype(np.float64) + s.astype(np.float32).astype(np.float16).astype(np.float64)
    return (hp.astype(np.float16).astype(np.float64) * w.astype(np.float16).astype(np.float64)).astype(np.float16)


def _row(warp: int, lane: int) -> int:
    """The word row of a lane in the verified layout (threadsPerWarp [1, 2, 16], warpsPerCTA [1, 2, 1])."""
    return 2 * warp + (lane >> 4)


def _shfl_words(mem: bytearray, load: str, form: str) -> tuple[list[list[int]], list[Warp]]:
    """Every lane's 16 output words of the "load" + "form" asm pair at tile kt (and the warps, for their loads)."""
    out, warps = [], []
    for wi in range(2):
        warp = Warp(wi, mem)
        for lane in range(32):
            kr = KT + 8 * _row(wi, lane)
            r = warp.regs[lane]
            r["$5"], r["$6"], r["$7"] = BASE["s"] + 4 * kr, BASE["h"] + 2 * kr, BASE["w"] + 4 * (kr // 2)
        warp.run(load)
        for lane in range(32):  # the load's outputs $0-$4 are the form's inputs $16-$20
            r = warp.regs[lane]
            for n in range(5):
                r[f"${16 + n}"] = r[f"${n}"]
        warp.run(form)
        out += [[warp.regs[lane][f"${k}"] for k in range(16)] for lane in range(32)]
        warps.append(warp)
    return out, warps


def _xload_words(u: np.ndarray) -> list[list[int]]:
    """_x_chunks' words (its PTX, _XLOAD4_RO4) of u stored at BASE["u"], every lane."""
    from inlaid_worker.kernels.quant_hgemvr import _XLOAD4_RO4

    mem = bytearray(MEM_SIZE)
    mem[BASE["u"] : BASE["u"] + 2 * K] = u.astype(np.float16).tobytes()
    out = []
    for wi in range(2):
        warp = Warp(wi, mem)
        for lane in range(32):
            warp.regs[lane]["$16"] = BASE["u"] + 2 * (KT + 8 * _row(wi, lane))
        warp.run(_XLOAD4_RO4.value)
        out += [[warp.regs[lane][f"${k}"] for k in range(16)] for lane in range(32)]
    return out


def _pair_order(u: np.ndarray) -> list[list[int]]:
    """Every lane's words by formula: $4c+i = (u[k + i], u[k + 4 + i]), k = kr + 32 c."""
    bits = u.astype(np.float16).view(np.uint16).astype(np.int64)
    return [[int(bits[KT + 8 * _row(wi, lane) + 32 * (n >> 2) + (n & 3)])
             | int(bits[KT + 8 * _row(wi, lane) + 32 * (n >> 2) + (n & 3) + 4]) << 16 for n in range(16)]
            for wi in range(2) for lane in range(32)]  # fmt: skip


def _passes() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(s, h, w): each input numbered by its K index in turn (u = k exactly), then random values."""
    k = np.arange(K, dtype=np.float64)
    zero, one = np.zeros(K), np.ones(K)
    rng = np.random.default_rng(3)
    rand = (rng.standard_normal(K) * 3, rng.standard_normal(K) * 5, rng.random(K) + 0.5)
    return [(k, zero, one), (zero, k, one), (zero, one, k), rand]


def _wrong(load: str, form: str) -> str:
    """What goes wrong with this load / form pair over the passes ("" if nothing)."""
    bad = 0
    for s, h, w in _passes():
        try:
            got, _ = _shfl_words(_memory(s, h, w), load, form)
        except Misaligned as e:
            return f"misaligned: {e}"
        bad += sum(g != e for g, e in zip(got, _pair_order(_u(s, h, w)), strict=True))
    return f"{bad} lanes with wrong words" if bad else ""


def test_plan_offsets_are_the_pair_order() -> None:
    """ShflPlan.lane(j) (lane j of a segment: chunk c = j >> 2, pair i = j & 3) against the K indices a = 32 c + i
    and a + 4 of _x_chunks' pair word, and the pair-ordered weight's word (w[a], w[a + 4]) = its halves 2 (32 c) +
    4 i bytes in; the shipped strings are the generator's at the default plan."""
    from inlaid_worker.kernels import quant_hgemvr as q

    for j in range(16):
        c, i = j >> 2, j & 3
        a = 32 * c + i
        assert q.SHFL_PLAN.lane(j) == (4 * a, 4 * (a + 4), 2 * a, 2 * (a + 4), 2 * (32 * c) + 4 * i), j
    assert q._DN2_LOAD.value == q._dn2_shfl_ptx("load") and q._DN2_FORM.value == q._dn2_shfl_ptx("form")
    text = q._dn2_shfl_ptx("form")
    assert text.count("shfl.sync.idx.b32") == 16 and "cvt.rn.f16x2.f32 t, $17, $16;" in text  # (shfl, not shfl.sync)
    with pytest.raises(ValueError):
        q._dn2_shfl_ptx("mode7")


def test_emulated_shfl_ptx_gives_x_chunks_pair_order() -> None:
    """Every lane of both warps: its loads at ShflPlan.lane's offsets (aligned), and its 16 words equal the pair
    order by formula and _x_chunks' own PTX on u, for numbered sums, h and weight and for random values."""
    from inlaid_worker.kernels.quant_hgemvr import SHFL_PLAN, _dn2_shfl_ptx

    load, form = _dn2_shfl_ptx("load"), _dn2_shfl_ptx("form")
    for n, (s, h, w) in enumerate(_passes()):
        u = _u(s, h, w)
        if n < 3:
            assert np.array_equal(u.astype(np.float64), np.arange(K)), n  # (u names its K index)
        got, warps = _shfl_words(_memory(s, h, w), load, form)
        assert got == _pair_order(u), n
        assert got == _xload_words(u), n
    for warp in warps:  # (the last pass's) loads: s[a], s[a + 4], h[a], h[a + 4], the weight's pair word
        for lane in range(32):
            kr = KT + 8 * _row(warp.warp, lane)
            rel = (BASE["s"] + 4 * kr, BASE["s"] + 4 * kr, BASE["h"] + 2 * kr, BASE["h"] + 2 * kr,
                   BASE["w"] + 2 * kr)  # fmt: skip
            offs = tuple(addr - base for (addr, _), base in zip(warp.loads[lane], rel, strict=True))
            assert offs == SHFL_PLAN.lane(lane & 15), (warp.warp, lane, offs)
            assert [width for _, width in warp.loads[lane]] == [4, 4, 2, 2, 4]


@pytest.mark.parametrize(
    "variant",
    ["cvt_swapped", "h_swapped", "mad_27", "mad_30", "mad_32", "sum_hi_8", "h_hi_16", "no_segments",
     "order_reversed", "order_swap_1_4"],
)  # fmt: skip
def test_misordered_shfl_ptx_fails(variant: str) -> None:
    """Each mis-ordered generator gives wrong words on some lane or a misaligned load (mad 27: the weight's word at
    an odd half), so the test above can fail."""
    from inlaid_worker.kernels.quant_hgemvr import SHFL_PLAN, _dn2_shfl_ptx

    order = list(range(16))
    order[1], order[4] = 4, 1
    plans = {
        "cvt_swapped": replace(SHFL_PLAN, cvt="$16, $17"),
        "mad_27": replace(SHFL_PLAN, mad=27),
        "mad_30": replace(SHFL_PLAN, mad=30),
        "mad_32": replace(SHFL_PLAN, mad=32),
        "sum_hi_8": replace(SHFL_PLAN, sum_hi=8),
        "h_hi_16": replace(SHFL_PLAN, h_hi=16),
        "no_segments": replace(SHFL_PLAN, seg=0x1F),
        "order_reversed": replace(SHFL_PLAN, order=tuple(range(15, -1, -1))),
        "order_swap_1_4": replace(SHFL_PLAN, order=tuple(order)),
    }
    plan = plans.get(variant, SHFL_PLAN)
    load, form = _dn2_shfl_ptx("load", plan), _dn2_shfl_ptx("form", plan)
    if variant == "h_swapped":
        assert "{$18, $19}" in form
        form = form.replace("{$18, $19}", "{$19, $18}")
    assert _wrong(load, form), variant
