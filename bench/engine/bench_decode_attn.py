"""Paged decode attention kernels of kernels.paged_decode ("tiles": the tensor-core tile kernel; "split": interleaved
tiles on CUDA cores, first tile loaded before the PDL wait) on the Llama-2-7B attention shape, per batch and context.

Shape: 32 heads = 32 KV heads x 128, fp16 paged KV, block 16, each sequence `ctx` cached tokens, its blocks a random
permutation of the pool (as a served cache). Each layer has its own cache (`layers` of them per CUDA graph, enough to
spill the 50 MB L2), so the times are DRAM reads. Per variant (impl, partitions, split options), three CUDA graphs:
  attn_off: `layers` x attention alone, PDL off (per layer: the kernel(s) plus launch gaps)
  step_off: `layers` x (rope_cache.rope_and_cache + attention), PDL off
  step_on:  the same under kernels.pdl.scope(1) (the decode graphs' mode at buckets <= 16)
(--attn-on: attn_on, attention alone under scope(1)) and, with --profile, the kernels' own durations (torch.profiler over attn_off replays: what the step profiles
list, e.g. _decode_kernel 6.07 us at batch 1 / 512 in bench/results/decode-2026-11-30-pdl-profile.txt).
Checks: every variant's output against paged_decode_reference (fp32 torch), and in the step_on graph the new
token's K/V slot is clobbered before a replay, so a kernel that read it before rope_cache wrote it would fail
(`pdl_err`). Bytes = K and V of the context (2 x ctx x 32 x 128 x 2 B per sequence); `GBps` = bytes / kernel time.
  PYTHONPATH=workers python3 bench/engine/bench_decode_attn.py --out DIR --tag s8
Writes DIR/attention-<date>-<tag>.json (rows as they come) and prints one JSON line per row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from inlaid_worker.kernels import pdl
from inlaid_worker.kernels.paged_decode import LAST_SPLIT, choose_num_parts, paged_decode, paged_decode_reference
from inlaid_worker.kernels.rope_cache import rope_and_cache
from inlaid_worker.model.rope import cos_sin

HEADS, KV_HEADS, D, BLOCK = 32, 32, 128, 16
ATTN_ON = False  # --attn-on


def variants(b: int, dev: torch.device, full: bool) -> list[tuple[str, dict]]:
    """(name, paged_decode keyword arguments); the engine's partition count unless named."""
    p = choose_num_parts(b, KV_HEADS, dev)
    out = [("tiles", dict(impl="tiles")), ("split", dict(impl="split")), ("split-w2", dict(impl="split", num_warps=2)),
           ("tiles-nopre", dict(impl="tiles", tiles_prefetch=0)), ("tiles-pre", dict(impl="tiles", tiles_prefetch=1))]
    if full:
        out += [("split-w1", dict(impl="split", num_warps=1)),
                ("split-noahead", dict(impl="split", lookahead=0)),
                ("split-noprefetch", dict(impl="split", prefetch=0)),
                (f"split-p{p // 2}", dict(impl="split", num_parts=max(1, p // 2))),
                (f"split-p{p // 2}-w2", dict(impl="split", num_parts=max(1, p // 2), num_warps=2)),
                ("split-merge2-w2", dict(impl="split", merge=2, num_warps=2))]  # fmt: skip
    elif b <= 4:
        out += [(f"split-p{p // 2}-w2", dict(impl="split", num_parts=max(1, p // 2), num_warps=2))]
    keep = [v for v in VARIANTS_KEEP if v]
    return [v for v in out if not keep or v[0] in keep]


VARIANTS_KEEP: list[str] = []  # --variants (empty: all)


def graph_us(fn: Callable[[], list[torch.Tensor]], layers: int, mode: int,
             before: Callable[[], None] | None = None) -> tuple[float, list[torch.Tensor]]:  # fmt: skip
    """Per-layer microseconds of one CUDA graph of fn (captured under PDL `mode`), median of 5 x 20 replays; and
    the graph's outputs after one more replay (preceded by `before`, outside the graph)."""
    with pdl.scope(mode):
        fn()  # compile / tune outside the capture
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            outs = fn()
    for _ in range(3):
        g.replay()
    times = []
    for _ in range(5):
        a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(20):
            g.replay()
        e.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(e) * 1e3 / 20 / layers)
    if before is not None:
        before()
    g.replay()
    torch.cuda.synchronize()
    return statistics.median(times), outs


def kernel_us(fn: Callable[[], list[torch.Tensor]], layers: int) -> dict[str, float]:
    """Per-layer GPU time of each kernel of fn's graph (PDL off), torch.profiler over 5 replays."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "self_device_time_total", 0.0) or getattr(ev, "self_cuda_time_total", 0.0)
        if us > 0 and ev.key.startswith("_"):
            out[ev.key] = us / 5 / layers
    return out


def point(b: int, ctx: int, layers: int, full: bool, profile: bool, dev: torch.device) -> list[dict]:
    g = torch.Generator(device=dev).manual_seed(b * 100003 + ctx)
    per_seq = -(-ctx // BLOCK)
    nblk = b * per_seq
    kv = torch.empty(layers, 2, nblk, BLOCK, KV_HEADS, D, device=dev, dtype=torch.float16).normal_(0, 1, generator=g)
    tables = torch.randperm(nblk, device=dev, generator=g).to(torch.int32).reshape(b, per_seq)
    lens = torch.full((b,), ctx, device=dev, dtype=torch.int32)
    pos = lens - 1
    slots = (tables[:, (ctx - 1) // BLOCK].long() * BLOCK + (ctx - 1) % BLOCK).to(torch.int32)
    qkv = torch.randn(b, (HEADS + 2 * KV_HEADS) * D, device=dev, generator=g).half()
    q0 = torch.randn(b, HEADS, D, device=dev, generator=g).half()
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
    cos, sin = cos_sin(inv_freq, pos, torch.float16)
    scale = D**-0.5
    kv_bytes = b * ctx * 2 * KV_HEADS * D * 2
    rows = []
    for name, kw in variants(b, dev, full):
        parts = kw.get("num_parts") or choose_num_parts(b, KV_HEADS, dev) * kw.get("parts_scale", 1)

        def attn() -> list[torch.Tensor]:
            return [paged_decode(q0, kv[i, 0], kv[i, 1], tables, lens, scale, **kw) for i in range(layers)]  # noqa: B023

        qs: list[torch.Tensor] = []

        def step() -> list[torch.Tensor]:
            outs = []
            qs.clear()
            for i in range(layers):
                q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, kv[i, 0], kv[i, 1], HEADS)
                qs.append(q)
                outs.append(paged_decode(q, kv[i, 0], kv[i, 1], tables, lens, scale, **kw))  # noqa: B023
            return outs

        def clobber() -> None:  # the new tokens' K slots get values no correct read could mix in unnoticed
            kv[:, 0].view(layers, -1, KV_HEADS, D)[:, slots.long()] = 30.0

        row: dict = dict(batch=b, context=ctx, variant=name, parts=parts, layers=layers,
                         **{k: v for k, v in kw.items() if k not in ("impl", "num_parts")})  # fmt: skip
        try:
            t0 = time.time()
            out = attn()[0]
            if kw["impl"] == "split" and LAST_SPLIT[0] is not None:  # registers a thread, spills, shared memory
                ck = LAST_SPLIT[0]
                row.update(regs=ck.n_regs, spills=ck.n_spills, shared=ck.metadata.shared)
            ref = paged_decode_reference(q0, kv[0, 0], kv[0, 1], tables, lens, scale).float()
            row["rel_err"] = float((out.float() - ref).norm() / ref.norm())
            row["attn_off_us"], _ = graph_us(attn, layers, 0)
            if ATTN_ON:
                row["attn_on_us"], _ = graph_us(attn, layers, 1)
            row["step_off_us"], _ = graph_us(step, layers, 0)
            row["step_on_us"], outs = graph_us(step, layers, 1, clobber)
            last = layers - 1
            ref = paged_decode_reference(qs[last], kv[last, 0], kv[last, 1], tables, lens, scale).float()
            row["pdl_err"] = float((outs[last].float() - ref).norm() / ref.norm())
            if profile and name in ("tiles", "split", "tiles-nopre", "tiles-pre"):
                row["kernel_us"] = kernel_us(attn, layers)
                row["kernel_sum_us"] = sum(row["kernel_us"].values())
                row["GBps"] = kv_bytes / row["kernel_sum_us"] / 1e3
            row["wall_s"] = round(time.time() - t0, 1)
        except Exception as exc:  # one failing variant must not void the others
            row["error"] = repr(exc)[:400]
        rows.append(row)
        print(json.dumps(row), flush=True)
    del kv
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--points", default="1:512,2048,4096;2:512,4096;4:512,4096;16:512,4096",
                    help="batch:contexts;... (the full variant sweep at batch 1)")  # fmt: skip
    ap.add_argument("--full-batches", default="1")
    ap.add_argument("--min-layer-mb", type=float, default=200.0, help="enough layers for this much KV per graph")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--variants", default="", help="comma list of variant names to run (default: all)")
    ap.add_argument("--attn-on", action="store_true", help="also time attention alone under PDL (attn_on)")
    args = ap.parse_args()
    global ATTN_ON
    VARIANTS_KEEP[:] = args.variants.split(",")
    ATTN_ON = args.attn_on
    dev = torch.device("cuda")
    t_start = time.time()
    date = dt.date.today().isoformat()
    meta = dict(date=date, command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                device=torch.cuda.get_device_name(dev), torch=torch.__version__, triton=triton.__version__,
                shape=dict(heads=HEADS, kv_heads=KV_HEADS, head_dim=D, block=BLOCK, dtype="fp16"),
                sms=torch.cuda.get_device_properties(dev).multi_processor_count)  # fmt: skip
    x = torch.empty(1 << 28, device=dev, dtype=torch.uint8)  # copy bandwidth: 256 MiB read + written
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(10):
        y.copy_(x)
    e.record()
    torch.cuda.synchronize()
    meta["copy_GBps"] = 2 * x.numel() * 10 / (a.elapsed_time(e) * 1e-3) / 1e9
    del x, y
    full = {int(v) for v in args.full_batches.split(",") if v}
    rows: list[dict] = []
    out = args.out / f"attention-{date}{'-' + args.tag if args.tag else ''}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(meta), flush=True)
    for item in args.points.split(";"):
        bs, _, ctxs = item.partition(":")
        for ctx in (int(c) for c in ctxs.split(",")):
            if time.time() - t_start > args.max_seconds:
                print(json.dumps(dict(skipped=f"{bs}:{ctx}", reason="--max-seconds")), flush=True)
                continue
            b = int(bs)
            layer_mb = b * ctx * 2 * KV_HEADS * D * 2 / 1e6
            layers = int(min(32, max(4, -(-args.min_layer_mb // layer_mb))))
            rows += point(b, ctx, layers, b in full, args.profile, dev)
            meta["wall_s"] = round(time.time() - t_start, 1)
            out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
