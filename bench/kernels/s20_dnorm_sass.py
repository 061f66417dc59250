"""Session 20: offline sm_90a registers / spills of the "+dn" (deferred norm) launches at the 7B batch-1 shapes, against
today's launches of the same GEMVs (no GPU needed): qkv (12288 x 4096, hgemvr 1/64/128 split 8) reading x vs
self-finishing with dnorm (mode 2); gate/up (22016 x 4096, hgemvr split 4, deferred) reading x vs dnorm (mode 1);
down (4096 x 11008, hgemvr split 22, deferred, x from the gate/up sums) vs x_sums + x_norm. Launches recorded and
compiled as bench/kernels/s16_omerge_sass.py does (its record / compile_sm90 / regs / waves), PDL mode 1.

Usage: PYTHONPATH=workers:workers/tests/kernels:bench/kernels python3 bench/kernels/s20_dnorm_sass.py
"""

from __future__ import annotations

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

    wq, wgu, wd = weight(hidden, nq), weight(hidden, 2 * inter), weight(inter, hidden)
    h = torch.zeros(1, hidden, dtype=torch.float16)
    h2 = torch.zeros_like(h)
    g = torch.ones(hidden, dtype=torch.float16)
    sums = torch.zeros(1, hidden)
    yq = torch.zeros(1, nq, dtype=torch.float16)
    gu = torch.zeros(1, 2 * inter)
    reg = torch.zeros(4 * 2 * inter)
    slot = torch.zeros(1024)
    xd = torch.zeros(1, inter, dtype=torch.float16)
    fl = dict(const_stride=True)
    import os

    MX = {"maxnreg": int(os.environ["MAXNREG"])} if os.environ.get("MAXNREG") else {}
    if os.environ.get("DN_ABL"):  # (the bench's ablations)
        MX["dn_abl"] = int(os.environ["DN_ABL"])
    cases = (
        ("qkv x (today)", 8, lambda: launch_hgemvr(h, wq, 1, 64, 128, 8, 2, yq, **fl)),
        (
            "qkv dnorm",
            8,
            lambda: launch_hgemvr(h, wq, 1, 64, 128, 8, 2, yq, dnorm=(sums, h, h2, g, slot, 1e-5), **fl, **MX),
        ),
        (
            "gate/up x (today)",
            4,
            lambda: launch_hgemvr(h, wgu, 1, 64, 128, 4, 2, h, finish=True, defer=True, sums=reg, **fl),
        ),
        (
            "gate/up dnorm",
            4,
            lambda: launch_hgemvr(
                h,
                wgu,
                1,
                64,
                128,
                4,
                2,
                h,
                finish=True,
                defer=True,
                sums=reg,
                dnorm=(sums, h, h2, g, slot, 1e-5),
                **fl,
                **MX,
            ),
        ),
        (
            "down x_sums (today)",
            22,
            lambda: launch_hgemvr(xd, wd, 1, 64, 128, 22, 2, xd, finish=True, defer=True, sums=reg, x_sums=gu, **fl),
        ),
        (
            "down x_sums + x_norm",
            22,
            lambda: launch_hgemvr(
                xd,
                wd,
                1,
                64,
                128,
                22,
                2,
                xd,
                finish=True,
                defer=True,
                sums=reg,
                x_sums=gu,
                x_norm=(slot, hidden, 1e-5),
                **fl,
            ),
        ),
    )
    print(f"7B int4 g128 batch 1, PDL mode 1, sm_90a offline (triton {triton.__version__})", flush=True)
    for label, split, launch in cases:
        seen = [s for s in record(launch) if s[0].__name__ == "_hgemvr_kernel"]
        if not seen:
            print(f"{label:24s} no launch recorded", flush=True)
            continue
        fn, args, kwargs = seen[0]
        try:
            r = regs(compile_sm90(fn, args, dict(kwargs)))
        except Exception as exc:  # noqa: BLE001 - reported per case
            print(f"{label:24s} FAILED {exc!r}"[:3000], flush=True)
            continue
        n = {"qkv": nq, "gate/up": 2 * inter, "down": hidden}[label.split()[0]]
        grid = -(-n // 64) * split
        print(f"{label:24s} {r}  grid {grid} CTAs, {waves(grid, r['regs'], 64):.2f} waves", flush=True)


if __name__ == "__main__":
    main()
