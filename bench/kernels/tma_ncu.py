"""Hardware counters (Nsight Compute) of the small-M int4 kernels next to their read floors (helper H2,
2026-11-30, after the TMA read floor: bench/kernels/tma_read.py). One launch of each case below, on the 7B up
weight (K 4096, N 11008), run under `ncu --profile-from-start off` (each launch sits between
cudaProfilerStart/Stop after a warm-up that compiles it); ncu flushes the caches before each replay pass (cold L2, as
the graph timings). Which stalls hold the GEMVs above the read of their own words?

Usage on the device: bash bench/kernels/tma_ncu.sh   (CPU: `python3 tma_ncu.py summary CSV` re-prints a summary)
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

CASES = ("read flat B4096 w8 U4 P528", "read gemv-grid n64 t3 +ep", "tma flat box32x256 st4 noconsume",
         "hgemvr t4 M1", "hgemvr t8 M4", "tc2 m8 n64 s4 st4 M8", "tc2 m16 n128 s4 st4 M16")  # fmt: skip
METRICS = (  # (section's metric name as ncu prints it, short label)
    ("Duration", "us"), ("DRAM Throughput", "dram %"), ("Memory Throughput", "mem %"),
    ("Compute (SM) Throughput", "sm %"), ("Registers Per Thread", "regs"), ("Achieved Occupancy", "occ %"),
    ("Theoretical Occupancy", "theo occ %"), ("Grid Size", "grid"), ("Block Size", "block"),
    ("Warp Cycles Per Issued Instruction", "cyc/issue"), ("Issued Warp Per Scheduler", "issue/sched"),
    ("No Eligible", "no eligible %"), ("Active Warps Per Scheduler", "warps/sched"),
    ("Eligible Warps Per Scheduler", "eligible/sched"),
)  # fmt: skip


def run_cases(which: list[str]) -> None:
    import torch
    from gemv_h200 import make_weight
    from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig
    from read_kernels import launch_read1d, launch_read2d
    from tma_read import launch

    k, n = 4096, 11008
    w = make_weight(k, n, 4, False)
    scratch = torch.empty(4 * 1024 * 1024, dtype=torch.int32, device="cuda")
    yf = torch.zeros(n, dtype=torch.float16, device="cuda")
    descs: dict = {}
    tma_cfg = dict(view="flat", br=32, bc=256, stages=4, grid="1x", order="n", assign="inter", consume=False, warps=1)

    def gemv(m: int):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        y = torch.empty(m, n, dtype=torch.float16, device="cuda")
        return x, y

    x1, y1 = gemv(1)
    x4, y4 = gemv(4)
    x8, y8 = gemv(8)
    x16, y16 = gemv(16)
    rows = k // 8
    fns = {
        CASES[0]: lambda: launch_read1d(w.qweight.view(-1), 4096, 528, 4, 8, False, scratch),
        CASES[1]: lambda: launch_read2d(w.qweight, rows, n, 64, 16, -(-(rows // 16) // 3), 3, 2, False, scratch, yf),
        CASES[2]: lambda: launch(tma_cfg, w.qweight, scratch, descs),
        CASES[3]: lambda: launch_hgemvr(x1, w, 1, 64, 128, 8, 2, y1, const_stride=True),
        CASES[4]: lambda: launch_hgemvr(x4, w, 4, 64, 128, 4, 2, y4, const_stride=True),
        CASES[5]: lambda: launch_quant_matmul(x8, w, QMMConfig(8, 64, 128, 4, 4, 4, True, "tc2"), y8),
        CASES[6]: lambda: launch_quant_matmul(x16, w, QMMConfig(16, 128, 128, 4, 4, 4, True, "tc2"), y16),
    }
    for name in which:
        try:
            fns[name]()  # compile + warm
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            fns[name]()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            print("ran", name, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported
            print("FAILED", name, repr(exc)[:300], flush=True)


def summary(path: Path, names: list[str]) -> str:
    """A markdown table (one row per profiled kernel) of METRICS and the top warp stall reasons, from ncu's
    `--csv --page details` output."""
    text = path.read_text()
    start = text.find('"ID"')
    rows = list(csv.DictReader(text[start:].splitlines())) if start >= 0 else []
    kernels: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for r in rows:
        kid = r.get("ID", "")
        if kid not in kernels:
            kernels[kid] = {"kernel": r.get("Kernel Name", "")[:40]}
            order.append(kid)
        metric = r.get("Metric Name", "")
        unit = r.get("Metric Unit", "")
        kernels[kid][metric] = r.get("Metric Value", "") + ("" if unit in ("", "%") else f" {unit}")
    heads = [label for _, label in METRICS]
    md = ["| case | kernel | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for i, kid in enumerate(order):
        d = kernels[kid]
        case = names[i] if i < len(names) else "?"
        md.append(f"| {case} | {d['kernel']} | " + " | ".join(d.get(m, "-") for m, _ in METRICS) + " |")
    return "\n".join(md)


def stalls(path: Path, names: list[str], top: int = 6) -> str:
    """The largest warp stall reasons per kernel (cycles per issued instruction) from ncu's `--csv --page raw`."""
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"')), None)
    if start is None:
        return "(no raw page)"
    table = list(csv.reader(lines[start:]))
    head, data = table[0], [r for r in table[2:] if r]  # row 1: units
    pre = "smsp__average_warp_latency_issue_stalled_"
    cols = [i for i, h in enumerate(head) if h.startswith(pre) and h.endswith(".ratio")]
    if not cols:
        pre = "smsp__average_warps_issue_stalled_"
        cols = [i for i, h in enumerate(head) if h.startswith(pre) and h.endswith("_per_issue_active.ratio")]
    md = ["| case | top stall reasons (warp cycles per issued instruction) |", "|---|---|"]
    for j, r in enumerate(data):
        vals = []
        for i in cols:
            try:
                vals.append(
                    (float(r[i].replace(",", "")), head[i][len(pre) :].split(".")[0].removesuffix("_per_issue_active"))
                )
            except (ValueError, IndexError):
                continue
        vals.sort(reverse=True)
        md.append(
            f"| {names[j] if j < len(names) else '?'} | " + ", ".join(f"{n} {v:.1f}" for v, n in vals[:top]) + " |"
        )
    return "\n".join(md)


def main() -> None:
    if sys.argv[1] == "run":
        run_cases(sys.argv[2:] or list(CASES))
    elif sys.argv[1] == "summary":  # summary DETAILS_CSV [RAW_CSV]
        print(summary(Path(sys.argv[2]), list(CASES)))
        if len(sys.argv) > 3:
            print()
            print(stalls(Path(sys.argv[3]), list(CASES)))


if __name__ == "__main__":
    main()
