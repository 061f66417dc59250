"""Does Programmatic Dependent Launch survive CUDA-graph capture here, and what does it save per kernel?

A chain of N small Triton kernels (each reads the previous one's output, adds one and writes into a ping-pong
buffer, so every kernel also overwrites what the one before it read) is captured into a torch CUDA graph three
ways: plain launches; launch_pdl=True with gdc_wait (kernels.pdl's rules); and launch_pdl=True with NO wait (a
negative control: if the programmatic edges survived capture, a kernel may now read its input before the
previous kernel wrote it, which a slow "producer" kernel in front of each reader makes likely). Prints one JSON
line: per variant, the replay time per kernel (median of 20 replays) and whether the chain's result is exact.
  PYTHONPATH=workers python3 bench/engine/pdl_check.py [--kernels 256] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton
import triton.language as tl


@triton.jit
def _step_kernel(src, dst, w, n, SPIN: tl.constexpr, USE_GDC: tl.constexpr, WAIT: tl.constexpr,
                 BLOCK: tl.constexpr):  # fmt: skip
    """dst = src + w (w = 1: a 'weight', read before the wait); SPIN > 0: a slow producer (busy loop first)."""
    if USE_GDC:
        tl.extra.cuda.gdc_launch_dependents()
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    one = tl.load(w + offs, mask=mask, other=0.0)
    if USE_GDC and WAIT:
        tl.extra.cuda.gdc_wait()
    acc = one * 0.0
    for _ in range(SPIN):  # a producer that takes a while before it writes
        acc = acc * 0.5 + one * 1e-9
    x = tl.load(src + offs, mask=mask, other=0.0)
    tl.store(dst + offs, x + one + acc * 0.0, mask=mask)


def chain(bufs: list[torch.Tensor], w: torch.Tensor, count: int, use_gdc: bool, wait: bool, spin: int) -> None:
    n = w.numel()
    block = 1024
    for i in range(count):
        src, dst = bufs[i % 2], bufs[(i + 1) % 2]
        kw = dict(USE_GDC=use_gdc, WAIT=wait)
        if use_gdc:
            kw["launch_pdl"] = True
        # every other kernel is a slow producer, so a reader that does not wait sees stale data
        _step_kernel[(triton.cdiv(n, block),)](src, dst, w, n, SPIN=spin if i % 2 == 0 else 0, BLOCK=block,
                                               num_warps=4, **kw)  # fmt: skip


def run_variant(count: int, n: int, use_gdc: bool, wait: bool, spin: int, reps: int = 20) -> dict:
    dev = torch.device("cuda")
    w = torch.ones(n, device=dev)
    bufs = [torch.zeros(n, device=dev), torch.zeros(n, device=dev)]
    chain(bufs, w, count, use_gdc, wait, spin)  # compile outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        chain(bufs, w, count, use_gdc, wait, spin)
    exact, times = True, []
    for _ in range(reps):
        bufs[0].zero_()
        bufs[1].zero_()
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3)
        got = bufs[count % 2]
        exact &= bool((got == count).all())
    t = sorted(times)[len(times) // 2]
    return dict(us_per_kernel=t / count, replay_us=t, exact=exact, wrong_elems_last=int((bufs[count % 2] != count).sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=256)
    ap.add_argument("--n", type=int, default=132 * 1024, help="elements (one 1024-wide program each)")
    ap.add_argument("--spin", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = dict(torch=torch.__version__, triton=triton.__version__, device=torch.cuda.get_device_name(),
               cuda=torch.version.cuda, kernels=args.kernels, n=args.n)  # fmt: skip
    for spin in (0, args.spin):
        for name, gdc, wait in (("plain", False, False), ("pdl_wait", True, True), ("pdl_nowait", True, False)):
            res[f"{name}_spin{spin}"] = run_variant(args.kernels, args.n, gdc, wait, spin)
    line = json.dumps(res)
    print(line, flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pdl_check.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
