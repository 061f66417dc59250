"""Session 16 (issue 4) prototype, before it went into decode_row: the row attention's merge with every load issued
before any arithmetic in the sm_90a SASS ("ordered").

decode_row._merge_cg (merge 1) issues all its loads first in the PTX (.cg: ld.global.cg, LDG.E.STRONG.GPU), but ptxas
reorders them: in the 7B batch-1 launch (rope, 32 partitions of one 16-token tile, one warp) it issues the maxima's
load, waits for it in their warp max-reduction (SHFL.BFLY / FMNMX), and only then the sums' and the partial outputs'
loads: two dependent L2 round trips. ptxas keeps volatile loads in program order, so here every load is volatile
(ld.volatile.global: LDG.E.STRONG.SYS, L1 bypassed like .cg) and issued partial outputs first, then the sums, then
the maxima: the first use of a loaded value (the maxima's reduction) comes after the last load is issued. The maths
is merge 1's.

`ordered_row_kernel()` returns decode_row._row_kernel's source compiled with this merge in place of _merge_cg (copies
of the Python functions with that one global replaced; the package is untouched): bench/kernels/s16_b1.py swaps it
into decode_row for its "proto=1" variants. `python3 bench/kernels/s16_b1_merge.py [BATCH]` (no GPU): the sm_90a SASS
of the 7B launch at BATCH (1: 32 partitions, 2: 16) for the package's kernel and this one, and the arithmetic or
shuffles each issues between its first and last merge load after the arrival atomic.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
from sm90_build import compile_sm90, record  # type: ignore[import-not-found]  # noqa: E402


@triton.jit
def _merge_ordered(out_ptr, pm_ptr, pl_ptr, pacc_ptr, s, kvh, d, mask_d, n_busy, stride_ot, stride_oh,
                   HEADS: tl.constexpr, REP: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr,
                   MERGE_CHUNK: tl.constexpr):  # fmt: skip
    parts = tl.arange(0, NUM_PARTS)
    wrote = parts < n_busy
    pc = tl.arange(0, MERGE_CHUNK)
    for rr in tl.static_range(REP):
        h = kvh * REP + rr
        base = (s * HEADS + h) * NUM_PARTS
        # volatile: ptxas keeps them in this order, so the maxima (whose reduction is the first use) go out last
        pacc = tl.load(pacc_ptr + (base + pc)[:, None] * D_PAD + d[None, :], mask=(pc < n_busy)[:, None], other=0.0,
                       volatile=True)  # fmt: skip
        lp = tl.load(pl_ptr + base + parts, mask=wrote, other=0.0, volatile=True)
        m = tl.load(pm_ptr + base + parts, mask=wrote, other=float("-inf"), volatile=True)
        m_max = tl.max(m, axis=0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
        w = tl.exp(m - m_max)  # 0 for the partitions that did not write
        tot = tl.sum(lp * w, axis=0)
        if MERGE_CHUNK == NUM_PARTS:
            o = tl.sum(pacc * w[:, None], axis=0)
        else:
            o = tl.sum(pacc * tl.exp(tl.load(pm_ptr + base + pc, mask=pc < n_busy, other=float("-inf"),
                                             volatile=True) - m_max)[:, None], axis=0)  # fmt: skip
            for c0 in tl.static_range(MERGE_CHUNK, NUM_PARTS, MERGE_CHUNK):
                wc = c0 + pc < n_busy
                pc_acc = tl.load(pacc_ptr + (base + c0 + pc)[:, None] * D_PAD + d[None, :], mask=wc[:, None],
                                 other=0.0, volatile=True)  # fmt: skip
                mc = tl.load(pm_ptr + base + c0 + pc, mask=wc, other=float("-inf"), volatile=True)
                o += tl.sum(pc_acc * tl.exp(mc - m_max)[:, None], axis=0)
        o = o / tl.where(tot > 0, tot, 1.0)
        tl.store(out_ptr + s * stride_ot + h * stride_oh + d, o.to(out_ptr.dtype.element_ty), mask=mask_d)


def _with_globals(jf: Any, tag: str, **repl: Any) -> Any:
    f = jf.fn
    g = types.FunctionType(f.__code__, dict(f.__globals__, **repl), f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__, g.__doc__, g.__module__ = f.__kwdefaults__, f.__doc__, f.__module__
    g.__annotations__ = dict(f.__annotations__)  # (the constexpr parameters: Triton reads them from here)
    g.__qualname__ = f.__qualname__ + "_" + tag
    return triton.jit(g)


_KERNEL: list = []


def ordered_row_kernel() -> Any:
    """decode_row._row_kernel with _merge_ordered in place of _merge_cg (built once)."""
    from inlaid_worker.kernels import decode_row

    if not _KERNEL:
        fin = _with_globals(decode_row._finish, "ordered", _merge_cg=_merge_ordered)
        _KERNEL.append(_with_globals(decode_row._row_kernel, "ordered", _finish=fin))
    return _KERNEL[0]


def merge_sass(kernel: Any, batch: int, **opts: int) -> str:
    """sm_90a SASS of the 7B row_rope_decode launch at `batch` (512 tokens, the engine's partitions), compiled with
    `kernel` in place of decode_row._row_kernel (offline); opts: decode_row options (merge, ...)."""
    import torch
    from inlaid_worker.kernels import decode_row

    heads, d = 32, 128
    num_parts = {1: 32, 2: 16}.get(batch, 8)
    kv = torch.zeros(64, 16, heads, d, dtype=torch.float16)
    qkv = torch.zeros(batch, 3 * heads * d, dtype=torch.float16)
    cs = torch.zeros(batch, d, dtype=torch.float16)
    tables = torch.zeros(batch, 64, dtype=torch.int32)
    lens = torch.full((batch,), 512, dtype=torch.int32)
    slots = torch.zeros(batch, dtype=torch.int64)
    seen = record(lambda: decode_row.row_rope_decode(qkv, cs, cs, slots, kv, kv.clone(), tables, lens, d**-0.5, heads,
                                                     num_parts=num_parts, **opts))  # fmt: skip
    _, args, kwargs = seen[0]
    ck = compile_sm90(kernel, args, dict(kwargs))
    binary = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        return subprocess.run([binary, "-sass", f.name], capture_output=True, text=True, check=True).stdout


def between_loads(sass: str) -> tuple[int, list[str]]:
    """After the (last) ATOMG: the number of global loads, and the arithmetic / shuffle instructions issued between
    the first and the last of them (each one there waits for a load issued before it: a second round trip)."""
    ins = [m.group(1).strip() for m in re.finditer(r"/\*[0-9a-f]{4}\*/\s+([^;]+);", sass)]
    atom = max(i for i, s in enumerate(ins) if "ATOMG" in s)
    tail = ins[atom:]
    loads = [i for i, s in enumerate(tail) if "LDG" in s]
    return len(loads), [s for s in tail[loads[0] : loads[-1]] if re.search(r"SHFL|FMNMX|MUFU|FMUL|FFMA|FADD|FSEL", s)]


if __name__ == "__main__":
    from inlaid_worker.kernels import decode_row

    b = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for name, k in (("package", decode_row._row_kernel), ("ordered", ordered_row_kernel())):
        n, mid = between_loads(merge_sass(k, b))
        print(f"batch {b} {name}: {n} merge loads, {len(mid)} arithmetic / shuffles between the first and last: "
              f"{mid[:6]}", flush=True)  # fmt: skip
