"""Session 20, second design: offline sm_90a registers / spills of the "+dn2" consumer launches at the 7B batch-1
shapes against today's (no GPU needed): qkv (12288 x 4096, hgemvr 1/64/128 split 8) reading x (today: self-finishing;
and deferred, as "+q") vs dnorm2 (deferred); gate/up (22016 x 4096, split 4, deferred) reading x vs dnorm2; each
dnorm2 in both modes (1: u formed where a tile is used, 2: where it is loaded), capped at MAXNREG (default 80, the
shipped deferred_norm.DN2_MAXNREG) and uncapped; MODES=3,4: the bench ablations (capped only). Launches recorded
and compiled as bench/kernels/s16_omerge_sass.py does (its record / compile_sm90 / regs / waves), PDL mode 1. The
grid counts the extra N column of dnorm2.

Usage: [MODES=1,2] [MAXNREG=80] PYTHONPATH=workers:workers/tests/kernels:bench/kernels python3 \
       bench/kernels/s20_dnorm2_sass.py
"""

from __future__ import annotations

import os

import torch
import triton
from s16_omerge_sass import compile_sm90, record, regs, waves  # type: ignore[import-not-found]


def main() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

    hidden, inter, nq = 4096, 11008, 12288
    torch.manual_seed(0)

    def weight(k: int, n: int):  # type: ignore[no-untyped-def]
        return prepare_gptq_weight(**make_gptq(k, n, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)

    wq, wgu = weight(hidden, nq), weight(hidden, 2 * inter)
    h = torch.zeros(1, hidden, dtype=torch.float16)
    h2 = torch.zeros_like(h)
    g = torch.ones(hidden, dtype=torch.float16)
    sums = torch.zeros(1, hidden)
    yq = torch.zeros(1, nq, dtype=torch.float16)
    reg = torch.zeros(4 * 2 * inter)
    slot = torch.zeros(1024)
    fl = dict(const_stride=True)
    cap = int(os.environ.get("MAXNREG", "80"))
    dn2 = (sums, h, h2, g, slot, 1e-5)
    d = dict(finish=True, defer=True, sums=reg)
    cases = [
        ("qkv x (today)", nq, 8, 0, lambda: launch_hgemvr(h, wq, 1, 64, 128, 8, 2, yq, **fl)),
        ("qkv x deferred (+q)", nq, 8, 0, lambda: launch_hgemvr(h, wq, 1, 64, 128, 8, 2, h, **d, **fl)),
        ("gate/up x (today)", 2 * inter, 4, 0, lambda: launch_hgemvr(h, wgu, 1, 64, 128, 4, 2, h, **d, **fl)),
    ]
    for mode in [int(x) for x in os.environ.get("MODES", "1,2").split(",")]:
        for mx in (cap, None) if mode <= 2 else (cap,):
            kw = {} if mx is None else {"maxnreg": mx}
            tag = f"dn2 m{mode} {'cap ' + str(mx) if mx else 'uncapped'}"
            cases.append((f"qkv {tag}", nq, 8, 1, lambda kw=kw, mode=mode: launch_hgemvr(
                h, wq, 1, 64, 128, 8, 2, h, **d, dnorm2=dn2, dn2_mode=mode, **fl, **kw)))  # fmt: skip
            cases.append((f"gate/up {tag}", 2 * inter, 4, 1, lambda kw=kw, mode=mode: launch_hgemvr(
                h, wgu, 1, 64, 128, 4, 2, h, **d, dnorm2=dn2, dn2_mode=mode, **fl, **kw)))  # fmt: skip
    print(f"7B int4 g128 batch 1, PDL mode 1, sm_90a offline (triton {triton.__version__})", flush=True)
    for label, n, split, extra, launch in cases:
        seen = [s for s in record(launch) if s[0].__name__ == "_hgemvr_kernel"]
        if not seen:
            print(f"{label:28s} no launch recorded", flush=True)
            continue
        fn, args, kwargs = seen[0]
        try:
            r = regs(compile_sm90(fn, args, dict(kwargs)))
        except Exception as exc:  # noqa: BLE001 - reported per case
            print(f"{label:28s} FAILED {exc!r}"[:3000], flush=True)
            continue
        grid = (-(-n // 64) + extra) * split
        print(f"{label:28s} {r}  grid {grid} CTAs, {waves(grid, r['regs'], 64):.2f} waves", flush=True)


if __name__ == "__main__":
    main()
