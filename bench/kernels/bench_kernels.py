"""Kernel benchmark on one CUDA GPU: int4/int3 quant_matmul vs bf16 cuBLAS and torch tinygemm, and
multi-LoRA shrink+expand vs a per-adapter torch loop. Random weights (speed does not depend on values).

Timing (primary, kernel time): every variant called R times on R rotating weight copies (> 3x L2
together) inside one CUDA graph, CUDA events around the replay; median over replays / R. Also reported
("eager"): triton.testing.do_bench of one call (L2 flushed), which on the lent machine includes the CPU
launch cost (Python dispatch + Triton launch, 50-120 us, more than these kernels take).
Tuning and compilation happen in a warm-up call first; every tuning candidate's time is kept in the JSON.
Each quantized result is checked against a dense fp32 product of the dequantized weight.
Usage: PYTHONPATH=workers python3 bench/kernels/bench_kernels.py --out DIR [--quick] [--tag v3] [--all-shapes]
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("INLAID_QMM_TUNED", "0")  # time every candidate, not the shipped picks (qmm_tuned)

import torch
import triton
from inlaid_worker.kernels import quant_common, quant_matmul_config
from inlaid_worker.kernels.gptq_packing import GPTQWeight, to_k_major
from inlaid_worker.kernels.lora_batch import choose_block_m, make_lora_batch, stack_adapters
from inlaid_worker.kernels.lora_sgmv import lora_apply
from inlaid_worker.kernels.quant_matmul import dequantize_gptq, quant_matmul

SHAPES = {  # name: (K, N); the first three are the default set
    "7B qkvo 4096x4096": (4096, 4096),
    "7B up 4096x11008": (4096, 11008),
    "7B down 11008x4096": (11008, 4096),
    "13B qkvo 5120x5120": (5120, 5120),
    "13B up 5120x13824": (5120, 13824),
    "13B down 13824x5120": (13824, 5120),
}
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
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


def time_pdl(calls: list[Callable[[], object]], use_pdl: bool, replays: int = 10) -> float:
    """time_rotated, with the graph captured inside kernels.pdl.scope(1) when `use_pdl` (the benches' "pdl" column:
    each call may start while the one before it ends)."""
    if not use_pdl:
        return time_rotated(calls, replays)
    from inlaid_worker.kernels import pdl

    with pdl.scope(1):
        return time_rotated(calls, replays)


def bench_us(fn: Callable[[], object]) -> float:
    """Median microseconds of one call (events around it, L2 flushed before each)."""
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3


# the last weight's fp32 dequantized matrix, with the packed tensor it came from held (an id alone could be reused by
# a later weight once the first is freed, and the check would then compare against another shape's product)
_DENSE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def workspace_clean() -> bool:
    """True when every split-K workspace and arrival counter is zero again (the kernels' invariant)."""
    torch.cuda.synchronize()
    return all(bool((ws == 0).all()) and bool((cnt == 0).all()) for ws, cnt in quant_common._WORKSPACES.values())


def rel_err(x: torch.Tensor, w: GPTQWeight, y: torch.Tensor) -> float:
    """||y - x @ W|| / ||x @ W|| with W dequantized in fp32 (the kernel's rows are in packed order)."""
    held = _DENSE.get(id(w.qweight))
    if held is None or held[0] is not w.qweight:
        _DENSE.clear()
        groups = (torch.arange(w.in_features, device=x.device) // w.group_size).int()
        dense = dequantize_gptq(w.qweight, w.qzeros, w.scales, groups, w.bits, w.zero_offset)
        _DENSE[id(w.qweight)] = (w.qweight, dense)
    dense = _DENSE[id(w.qweight)][1]
    xg = x.float()[:, w.perm.long()] if w.perm is not None else x.float()
    ref = xg @ dense
    return float((y.float() - ref).norm() / ref.norm())


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


def bench_quant(quick: bool, shapes: dict, log: Callable[[dict], None]) -> None:
    for name, (k, n) in shapes.items():
        w_bf16 = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        tg = tinygemm_fns(k, n, copies(k * n / 2))
        quants = {bits: [random_gptq(k, n, bits, False) for _ in range(copies(k * n * bits / 8))] for bits in (4, 3)}
        for m in MS[:3] if quick else MS:
            x16 = torch.randn(m, k, device="cuda", dtype=torch.float16)
            xb = x16.to(torch.bfloat16)
            row: dict = dict(shape=name, K=k, N=n, M=m)
            row["bf16_us"] = time_rotated([lambda w=w: xb @ w for w in w_bf16])
            row["bf16_eager_us"] = bench_us(lambda: xb @ w_bf16[0])
            row["tinygemm_us"] = time_rotated([lambda f=f: f(xb) for f in tg]) if tg else None
            for bits, ws in quants.items():
                y = quant_matmul(x16, ws[0])  # tunes once
                row[f"int{bits}_cfg"] = str(quant_matmul_config.LAST_PICK[0])
                row[f"int{bits}_err"] = max(rel_err(x16, ws[0], y), *(rel_err(x16, ws[0], quant_matmul(x16, ws[0])) for _ in range(2)))
                row[f"int{bits}_ws_clean"] = workspace_clean()  # split-K partials and counters back to zero
                t = time_rotated([lambda w=w: quant_matmul(x16, w) for w in ws])
                row[f"int{bits}_us"] = t
                row[f"int{bits}_GBps"] = gptq_bytes(ws[0]) / (t * 1e-6) / 1e9
                row[f"int{bits}_eager_us"] = bench_us(lambda w=ws[0]: quant_matmul(x16, w))
            if m in (1, 4, 16, 64):  # the same int4 weights stored K-major (load-time repack candidate)
                wk = [to_k_major(w) for w in quants[4]]
                y = quant_matmul(x16, wk[0])
                row["int4_kmajor_cfg"] = str(quant_matmul_config.LAST_PICK[0])
                row["int4_kmajor_err"] = rel_err(x16, wk[0], y)
                row["int4_kmajor_us"] = time_rotated([lambda w=w: quant_matmul(x16, w) for w in wk])
                del wk
            if name.startswith("7B up") and m in (1, 16):
                wa = random_gptq(k, n, 4, True)
                row["int4_actorder_err"] = rel_err(x16, wa, quant_matmul(x16, wa))
                row["int4_actorder_us"] = time_rotated([lambda: quant_matmul(x16, wa)] * 2)
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


def _best_by_kind(tune_log: dict, m: int, n: int, k: int, bits: int) -> dict[str, float]:
    """Fastest tuning time per kernel kind for one shape (standard layout, no act-order; from TUNE_LOG)."""
    best: dict[str, float] = {}
    for key, entries in tune_log.items():
        f = ast.literal_eval(key)  # (m bucket, N, K, bits, group, sym, act-order, K-major)
        if f[:4] == (quant_matmul_config.m_bucket(m), n, k, bits) and not f[6] and not (len(f) > 7 and f[7]):
            for cfg, us in entries:
                kind = cfg.split("kind='")[1].split("'")[0] if "kind='" in cfg else "?"
                if us > 0:
                    best[kind] = min(best.get(kind, 1e9), us)
    return best


def to_markdown(meta: dict, quant: list, lora: list, tune_log: dict | None = None) -> str:
    bw = meta["copy_GBps"]
    out = [f"# Kernel benchmark {meta['date']}", "", f"- command: `{meta['command']}`", f"- device: {meta['device']}",
           f"- torch {meta['torch']}, triton {meta['triton']}; measured copy bandwidth {bw:.0f} GB/s", "",
           "## Weight-only GEMM, fp16 activations, g128, asymmetric (kernel times in us: CUDA graph of rotating "
           "weight copies, events; BW = packed weight+scale+zero bytes / time; eager = do_bench of one call, "
           "CPU launch cost included)", "",
           "| shape | M | bf16 cuBLAS | tinygemm int4 | int4 | int4 BW (% copy) | int4 vs bf16 | int4 eager | int4 kernel | "
           "int3 | int3 BW (% copy) | int3 vs bf16 | int3 kernel | max rel err |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in quant:
        tg = f"{r['tinygemm_us']:.1f}" if r.get("tinygemm_us") else "n/a"
        kinds = [str(r.get(f"int{b}_cfg", "")).split("kind='")[-1].split("'")[0] for b in (4, 3)]
        out.append(
            f"| {r['shape']} | {r['M']} | {r['bf16_us']:.1f} | {tg} | {r['int4_us']:.1f} | "
            f"{r['int4_GBps']:.0f} ({100 * r['int4_GBps'] / bw:.0f}%) | {r['bf16_us'] / r['int4_us']:.2f}x | "
            f"{r['int4_eager_us']:.1f} | {kinds[0]} | {r['int3_us']:.1f} | {r['int3_GBps']:.0f} ({100 * r['int3_GBps'] / bw:.0f}%) | "
            f"{r['bf16_us'] / r['int3_us']:.2f}x | {kinds[1]} | {max(r['int4_err'], r['int3_err']):.1e} |"
        )
    extra = [r for r in quant if "int4_actorder_us" in r]
    out += ["", "act-order (x gathered through perm in-kernel): " + ", ".join(
        f"M={r['M']}: {r['int4_actorder_us']:.1f} us vs {r['int4_us']:.1f} (err {r['int4_actorder_err']:.1e})" for r in extra)]  # fmt: skip
    km = [r for r in quant if "int4_kmajor_us" in r]
    if km:
        out += ["", "## int4 with qweight stored K-major (gptq_packing.to_k_major) vs the standard layout (us)", "",
                "| shape | M | standard | K-major | K-major kernel | K-major rel err |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in km:
            kind = r["int4_kmajor_cfg"].split("kind='")[-1].split("'")[0]
            out.append(f"| {r['shape']} | {r['M']} | {r['int4_us']:.1f} | {r['int4_kmajor_us']:.1f} | {kind} | "
                       f"{r['int4_kmajor_err']:.1e} |")  # fmt: skip
    if tune_log:
        out += ["", "## Fastest tuning time per kernel kind (same run; us; tuner: CUDA graph, L2 evicted before each call)", "",
                "| shape | M | bits | gemv | hgemv (half2) | mma | dequant+cuBLAS | tile (v2) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in quant:
            for bits in (4, 3):
                b = _best_by_kind(tune_log, r["M"], r["N"], r["K"], bits)
                cells = [f"{b[kd]:.1f}" if kd in b else "-" for kd in ("gemv", "hgemv", "mma", "dequant", "tile")]
                out.append(f"| {r['shape']} | {r['M']} | {bits} | " + " | ".join(cells) + " |")
    if lora:
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
    ap.add_argument("--tag", default="")
    ap.add_argument("--all-shapes", action="store_true")
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
        stem = args.out / f"kernels-{date}{'-' + args.tag if args.tag else ''}"
        tune = quant_matmul_config.TUNE_LOG
        Path(f"{stem}.json").write_text(json.dumps(dict(meta=meta, quant=quant, lora=lora, tune_log=tune), indent=1))
        Path(f"{stem}.md").write_text(to_markdown(meta, quant, lora, tune))

    def log_to(rows: list) -> Callable[[dict], None]:
        def log(row: dict) -> None:
            rows.append(row)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            save()

        return log

    t0 = time.time()
    if args.only in (None, "quant"):
        shapes = SHAPES if args.all_shapes else dict(list(SHAPES.items())[:3])
        bench_quant(args.quick, shapes, log_to(quant))
    if args.only in (None, "lora"):
        bench_lora(args.quick, log_to(lora))
    save()
    print(to_markdown(meta, quant, lora, quant_matmul_config.TUNE_LOG))
    print(f"bench wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
