"""[Record: runs only at b4fa76e..9814c79; the +m code was removed in e017bd5.]
Offline sm_90a registers / spills of the "+m" decode fusion's launches at the 7B shapes (session 16; no GPU needed):
the o GEMV (4096 x 4096 int4 g128) merging the row attention's partials on load (quant_hgemvr's x_parts, through
consumer_finish.attn_o_add_norm, PDL mode 1 as the decode graphs launch it) against the same config reading x, and the
row attention storing partials only (decode_row's `partials`) against its shipped launch (merge 1). Launches are
recorded (nothing runs) and compiled for sm_90 with the launch's specialisation (16-divisible pointers and integers,
integers equal to 1 as constants, as Triton's JIT does), then ptxas -v (Triton's wheel), as bench/kernels/sass_tcl.py.

Usage: PYTHONPATH=workers:workers/tests/kernels:bench/kernels python3 bench/kernels/s16_omerge_sass.py
       [--batch 1|2] [KIND,BLOCK_M,BLOCK_N,SPLIT,WARPS ...]   (default: the shipped batch-1 o pick hgemvrb,1,64,11,2
       and block_n 128 / 256 variants)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import triton
from sass_tcl import analyse  # type: ignore[import-not-found]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
from sm90_build import compile_sm90, record  # type: ignore[import-not-found]  # noqa: E402

DEFAULT = ("hgemvrb,1,64,11,2", "hgemvrb,1,128,11,2", "hgemvrb,1,128,11,4", "hgemvrb,1,256,11,4", "hgemvrb,1,64,11,4",
           "hgemvrb,1,64,16,2", "hgemvr,1,128,11,2")
SMS = 132  # H200


def waves(grid: int, regs: int, threads: int) -> float:
    """Waves of a grid on the H200 by registers (allocated per warp in units of 256: regs rounded up to 8 a thread),
    threads (2,048 an SM) and 32 CTAs an SM (shared memory is small here)."""
    per_sm = min(65536 // (-(-regs // 8) * 8 * threads), 2048 // threads, 32)
    return grid / (SMS * per_sm) if per_sm else float("inf")


def regs(ck: Any) -> dict:
    r = analyse(dict(ck.asm, shared_bytes=ck.metadata.shared))
    return dict(regs=r["regs"], spill_stores=r["spill_stores"], smem=r["smem"], loop_instrs=r["loop_instrs"],
                loop_local=r["loop_local"], ptx_lines=ck.asm["ptx"].count("\n"))  # fmt: skip


def main() -> None:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels import consumer_finish as cf
    from inlaid_worker.kernels.decode_row import RowPartials, row_rope_decode
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    argv = sys.argv[1:]
    batch = 1
    if "--batch" in argv:
        i = argv.index("--batch")
        batch = int(argv[i + 1])
        del argv[i : i + 2]
    configs = argv or list(DEFAULT)
    heads, d, hidden = 32, 128, 4096
    num_parts = {1: 32, 2: 16}.get(batch, 8)  # decode_row.row_parts at 132 SMs, per_sm 8
    torch.manual_seed(0)
    w = prepare_gptq_weight(**make_gptq(hidden, hidden, 4, 128, False, False, 1), bits=4, group_size=128, sym=False)
    rows = batch * heads * num_parts
    parts = RowPartials(torch.zeros(rows), torch.zeros(rows), torch.zeros(rows, d),
                        torch.full((batch,), 512, dtype=torch.int32), num_parts, 16, heads, d)  # fmt: skip
    h = torch.zeros(batch, hidden, dtype=torch.float16)
    g = torch.ones(hidden, dtype=torch.float16)
    print(f"7B o GEMV {hidden}x{hidden} int4 g128, batch {batch}, {num_parts} partitions of block_n 16, PDL mode 1, "
          f"sm_90a offline (triton {triton.__version__})", flush=True)  # fmt: skip
    for spec in configs:
        kind, bm, bn, split, warps = spec.split(",")
        cfg = QMMConfig(int(bm), int(bn), 128, int(split), int(warps), 1, False, kind)
        for label, launch in (
            ("x (today)", lambda: cf.gemv_add_norm(cf.attn_x(parts), w, h, g, 1e-5, cfg)),
            ("x_parts (+m)", lambda: cf.attn_o_add_norm(parts, w, h, g, 1e-5, cfg)),
        ):
            seen = [s for s in record(launch) if s[0].__name__ == "_hgemvr_kernel"]
            if not seen:
                print(f"{spec:24s} {label:14s} no launch recorded", flush=True)
                continue
            fn, args, kwargs = seen[0]
            try:
                r = regs(compile_sm90(fn, args, dict(kwargs)))
            except Exception as exc:  # noqa: BLE001 - reported per config
                print(f"{spec:24s} {label:14s} FAILED {exc!r}"[:2000], flush=True)
                continue
            grid_n = -(-hidden // int(bn))
            l2 = grid_n * rows * (d + 2) * 4 / 1e6 if "parts" in label else 0.0
            grid = grid_n * int(split) * -(-batch // int(bm))
            wv = waves(grid, r["regs"], 32 * int(warps))
            print(f"{spec:24s} {label:14s} {r}  grid {grid} CTAs, {wv:.2f} waves; partial L2 reads/layer {l2:.1f} MB",
                  flush=True)  # fmt: skip
    # the row attention: the shipped launch (merge 1) against partials only
    kv = torch.zeros(64, 16, heads, d, dtype=torch.float16)
    qkv = torch.zeros(batch, 3 * heads * d, dtype=torch.float16)
    cs = torch.zeros(batch, d, dtype=torch.float16)
    tables = torch.zeros(batch, 64, dtype=torch.int32)
    lens = torch.full((batch,), 512, dtype=torch.int32)
    slots = torch.zeros(batch, dtype=torch.int64)
    for label, partials in (("row attention (today)", False), ("row attention partials", True)):
        seen = record(lambda p=partials: row_rope_decode(qkv, cs, cs, slots, kv, kv.clone(), tables, lens, d**-0.5,
                                                          heads, num_parts=num_parts, partials=p))  # fmt: skip
        fn, args, kwargs = seen[0]
        ck = compile_sm90(fn, args, dict(kwargs))
        r = regs(ck)
        print(f"{label:39s} {r} atom={ck.asm['ptx'].count('atom.')}", flush=True)


if __name__ == "__main__":
    main()
