"""Kernel benchmark on one CUDA GPU: int4/int3 quant_matmul vs bf16 cuBLAS and torch tinygemm, and
multi-LoRA shrink+expand vs a per-adapter torch loop. Random weights (speed does not depend on values).

Timing: every variant is called R times on R rotating weight copies (> 3x L2 together) inside one CUDA
graph; time = median over replays / R. Tuning and compilation happen in a warm-up call before capture.
Usage: PYTHONPATH=workers python3 bench/kernels/bench_kernels.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from inlaid_worker.kernels import quant_matmul_config
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.kernels.lora_batch import choose_block_m, make_lora_batch, stack_adapters
from inlaid_worker.kernels.lora_sgmv import lora_apply
from inlaid_worker.kernels.quant_matmul import quant_matmul

SHAPES = {  # name: (K, N)
    "7B qkvo 4096x4096": (4096, 4096),
    "7B up 4096x11008": (4096, 11008),
    "7B down 11008x4096": (11008, 4096),
    "13B qkvo 5120x5120": (5120, 5120),
    "13B up 5120x13824": (5120, 13824),
    "13B down 13824x5120": (13824, 5120),
}
MS = (1, 4, 16, 32, 64, 128, 256)
ROTATE_BYTES = 200e6  # L2 is 60 MB


def time_rotated(calls: list[Callable[[], object]], replays: int = 10) -> float:
    """Microseconds per call: all calls captured once in a graph, median over replays."""
    for c in calls[:1]:
        c()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(calls))
    del graph
    return sorted(times)[len(times) // 2]


def copies(nbytes: float) -> int:
    return int(min(64, max(2, math.ceil(ROTATE_BYTES / nbytes))))


def copy_bandwidth() -> float:
    """Device-to-device copy of 1 GiB (bytes read + written), events around each eager copy."""
    src = torch.randn(2**28, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return 2 * src.numel() * 4 / sorted(times[3:])[5]


def random_gptq(k: int, n: int, bits: int, act: bool) -> GPTQWeight:
    g = 128
    qw = torch.randint(-(2**31), 2**31 - 1, (k * bits // 32, n), dtype=torch.int32, device="cuda")
    qz = torch.randint(-(2**31), 2**31 - 1, (k // g, -(-n * bits // 32)), dtype=torch.int32, device="cuda")
    sc = (torch.rand(k // g, n, device="cuda") * 0.01 + 0.001).half()
    perm = torch.randperm(k, device="cuda").int() if act else None
    return GPTQWeight(qw, qz, sc, perm, bits, g, False, 1, k, n)


def gptq_bytes(w: GPTQWeight) -> int:
    return sum(t.numel() * t.element_size() for t in (w.qweight, w.qzeros, w.scales))


def tinygemm_fns(k: int, n: int, count: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """torch's int4 tinygemm on `count` rotating weight copies; [] where this torch lacks it."""
    fns = []
    try:
        for _ in range(count):
            w = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
            try:
                packed = torch._convert_weight_to_int4pack((w[:, ::2] << 4 | w[:, 1::2]).to(torch.uint8), 8)
            except RuntimeError:
                packed = torch._convert_weight_to_int4pack(w, 8)
            sz = torch.rand(k // 128, n, 2, device="cuda").to(torch.bfloat16)
            fns.append(lambda x, p=packed, s=sz: torch._weight_int4pack_mm(x, p, 128, s))
        fns[0](torch.randn(1, k, device="cuda", dtype=torch.bfloat16))
        return fns
    except Exception as exc:  # reported as n/a
        print(f"tinygemm unavailable: {exc!r}", file=sys.stderr)
        return []


def bench_quant(quick: bool, log: Callable[[dict], None]) -> None:
    for name, (k, n) in SHAPES.items():
        w_bf16 = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        tg = tinygemm_fns(k, n, copies(k * n / 2))
        quants = {bits: [random_gptq(k, n, bits, False) for _ in range(copies(k * n * bits / 8))] for bits in (4, 3)}
        for m in MS[:3] if quick else MS:
            x16 = torch.randn(m, k, device="cuda", dtype=torch.float16)
            xb = x16.to(torch.bfloat16)
            row: dict = dict(shape=name, K=k, N=n, M=m)
            row["bf16_us"] = time_rotated([lambda w=w: xb @ w for w in w_bf16])
            row["tinygemm_us"] = time_rotated([lambda f=f: f(xb) for f in tg]) if tg else None
            for bits, ws in quants.items():
                t = time_rotated([lambda w=w: quant_matmul(x16, w) for w in ws])
                row[f"int{bits}_us"] = t
                row[f"int{bits}_GBps"] = gptq_bytes(ws[0]) / (t * 1e-6) / 1e9
                row[f"int{bits}_cfg"] = str(quant_matmul_config.LAST_PICK[0])
            if name.startswith("7B up") and m in (1, 16):
                ws = [random_gptq(k, n, 4, True) for _ in range(copies(k * n / 2))]
                row["int4_actorder_us"] = time_rotated([lambda w=w: quant_matmul(x16, w) for w in ws])
            log(row)
        del w_bf16, quants, tg
        torch.cuda.empty_cache()


def naive_lora(y: torch.Tensor, x: torch.Tensor, adapters: list, groups: list) -> None:
    for (a, b, s), idx in zip(adapters, groups):
        y.index_add_(0, idx, (x[idx] @ a.t()) @ b.t(), alpha=s)


def bench_lora(quick: bool, log: Callable[[dict], None]) -> None:
    k = n = 4096
    cases = [(64, na, r) for r in (8, 16, 32, 64) for na in (1, 4, 16, 64)]
    cases += [(1024, 4, 16), (1024, 16, 64), (256, 64, 16), (1, 1, 16), (16, 16, 16)]
    if quick:
        cases = cases[:3]
    for t, na, r in cases:
        adapters = [
            (torch.randn(r, k, device="cuda").half() * 0.01, torch.randn(n, r, device="cuda").half() * 0.01, 2.0)
            for _ in range(na)
        ]
        pool = stack_adapters(adapters)
        ids = [i % na for i in range(t)]
        bm = choose_block_m(ids)
        batch = make_lora_batch(ids, pool.ranks.tolist(), bm, "cuda")
        x = torch.randn(t, k, device="cuda").half()
        y = torch.randn(t, n, device="cuda").half()
        groups = [torch.tensor([i for i in range(t) if ids[i] == a], device="cuda") for a in range(na)]
        groups_used = [(ad, g) for ad, g in zip(adapters, groups) if g.numel()]
        ours = time_rotated([lambda: lora_apply(y, x, pool, batch)] * 4)
        naive = time_rotated([lambda: naive_lora(y, x, [a for a, _ in groups_used], [g for _, g in groups_used])] * 2)
        lora_bytes = min(na, t) * r * (k + n) * 2
        log(dict(tokens=t, adapters=na, rank=r, block_m=bm, ours_us=ours, naive_us=naive, adapter_MB=lora_bytes / 1e6))


def to_markdown(meta: dict, quant: list, lora: list) -> str:
    bw = meta["copy_GBps"]
    out = [f"# Kernel benchmark {meta['date']}", "", f"- command: `{meta['command']}`", f"- device: {meta['device']}",
           f"- torch {meta['torch']}, triton {meta['triton']}; measured copy bandwidth {bw:.0f} GB/s", "",
           "## Weight-only GEMM, fp16 activations, g128 (times in us; BW = packed weight+scale+zero bytes / time)", "",
           "| shape | M | bf16 cuBLAS | tinygemm int4 | int4 | int4 BW (% copy) | int4 vs bf16 | int3 | int3 BW (% copy) |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in quant:
        tg = f"{r['tinygemm_us']:.1f}" if r.get("tinygemm_us") else "n/a"
        out.append(
            f"| {r['shape']} | {r['M']} | {r['bf16_us']:.1f} | {tg} | {r['int4_us']:.1f} | "
            f"{r['int4_GBps']:.0f} ({100 * r['int4_GBps'] / bw:.0f}%) | {r['bf16_us'] / r['int4_us']:.2f}x | "
            f"{r['int3_us']:.1f} | {r['int3_GBps']:.0f} ({100 * r['int3_GBps'] / bw:.0f}%) |"
        )
    extra = [r for r in quant if "int4_actorder_us" in r]
    out += ["", "act-order (x gathered through perm in-kernel): " + ", ".join(
        f"M={r['M']}: {r['int4_actorder_us']:.1f} us vs {r['int4_us']:.1f}" for r in extra)]  # fmt: skip
    out += ["", "## Multi-LoRA shrink+expand, K=N=4096, fp16 (times in us; naive = per-adapter torch loop)", "",
            "| tokens | adapters | rank | block_m | ours | naive | speedup |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in lora:
        out.append(
            f"| {r['tokens']} | {r['adapters']} | {r['rank']} | {r['block_m']} | {r['ours_us']:.1f} | "
            f"{r['naive_us']:.1f} | {r['naive_us'] / r['ours_us']:.1f}x |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["quant", "lora"], default=None)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    date = dt.date.today().isoformat()
    meta = dict(date=date, command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)  # fmt: skip
    meta["copy_GBps"] = copy_bandwidth() / 1e9
    print(f"copy bandwidth {meta['copy_GBps']:.0f} GB/s", flush=True)
    quant: list = []
    lora: list = []

    def save() -> None:
        stem = args.out / f"kernels-{date}"
        stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, quant=quant, lora=lora), indent=1))
        stem.with_suffix(".md").write_text(to_markdown(meta, quant, lora))

    def log_to(rows: list) -> Callable[[dict], None]:
        def log(row: dict) -> None:
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            save()

        return log

    t0 = time.time()
    if args.only in (None, "quant"):
        bench_quant(args.quick, log_to(quant))
    if args.only in (None, "lora"):
        bench_lora(args.quick, log_to(lora))
    save()
    print(to_markdown(meta, quant, lora))
    print(f"bench wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
