"""Session 9b, lever 1: fewer attention partitions at the smallest decode batches (kernels.paged_decode.parts_for,
FEWER_PARTS). s9b_profile.py found the batch-1 attention (rope + attention + merge) the largest non-GEMV piece of
the 7B int4 step (0.29 ms of 1.68) and nearly all fixed cost (context 1: -0.02 ms).
1. sweep: the step's forward (s9b_profile.forward_variant, CUDA graph, PDL) at batch 1 / 2 / 4 with the tiles kernel
   at every power-of-two partition count from the four-programs-per-SM rule's down to 1, contexts 512 / 2048 / 4096
   (the graph's staged buffer swapped; one graph per count), all graphs taking turns round by round;
   pick per batch: the least step at 512 among the counts not slower than the rule's at 2048 and 4096 (+0.5%);
2. decode: runner.execute at batch 1-16 (512 tokens) with FEWER_PARTS = () ("old", HEAD's rule) and the picks
   ("new") alternating round by round on one runner, each with its own decode graphs (as s9_decode.py).
Writes s9b-parts.json to --out. Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 \
bench/kernels/s9b_parts.py --out DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import paged_decode as pd  # noqa: E402
from inlaid_worker.model.decode_graphs import _FIELDS, stage_step  # noqa: E402
from inlaid_worker.model.rope import cos_sin  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import capture, forward_variant, replay_ms  # noqa: E402
from steps import BLOCK, make_step, timed_all  # noqa: E402

CONTEXTS = (512, 2048, 4096)


def sweep(runner, b: int, args, dev) -> dict:  # type: ignore[no-untyped-def]
    c, w = runner.config, runner.weights
    width = runner._width
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    rule = pd.parts_for(b, c.num_kv_heads, sms, fewer=())
    counts = [p for p in (32, 16, 8, 4, 2, 1) if p <= rule]
    n = b * (_FIELDS + width)
    staged = {}
    for ctx in CONTEXTS:
        host = torch.zeros(n, dtype=torch.int32, pin_memory=True)
        stage_step(host, b, width, make_step(b, 1, ctx, [-1] * b, c.vocab_size, runner.num_kv_blocks))
        staged[ctx] = host.to(dev)
    buf = staged[512].clone()
    f, tables = buf[: _FIELDS * b].view(_FIELDS, b), buf[_FIELDS * b :].view(b, width)
    h0 = F.embedding(f[0], w.embed).clone()
    cs, sn = cos_sin(runner._inv_freq, f[1], torch.float16)
    stat = {"h": h0, "cos": cs[:, 0].clone(), "sin": sn[:, 0].clone(), "out": {}}
    pool = torch.cuda.graph_pool_handle()
    graphs = {}
    for p in counts:
        body = functools.partial(forward_variant, w, c, f, tables, runner.kv_cache, p, runner._inv_freq,
                                 frozenset(), {}, stat)  # fmt: skip
        graphs[p] = capture(body, 1, pool)
    times: dict = {(p, ctx): [] for p in counts for ctx in CONTEXTS}
    for _ in range(args.rounds):
        for ctx in CONTEXTS:
            buf.copy_(staged[ctx])
            for p, g in graphs.items():
                times[(p, ctx)].append(replay_ms(g, args.replays))
    med = {p: {ctx: statistics.median(times[(p, ctx)]) for ctx in CONTEXTS} for p in counts}
    ok = [p for p in counts if all(med[p][ctx] <= 1.005 * med[rule][ctx] for ctx in CONTEXTS[1:])]
    pick = min(ok, key=lambda p: med[p][512])
    print(f"batch {b}: rule {rule} parts, pick {pick}", flush=True)
    for p in counts:
        print(f"  parts {p:2d} " + " ".join(f"ctx {ctx} {med[p][ctx]:.4f}" for ctx in CONTEXTS), flush=True)
    del graphs
    return dict(rule=rule, pick=pick, ms={str(p): {str(k): v for k, v in d.items()} for p, d in med.items()},
                rounds_ms={f"{p}@{ctx}": [round(x, 4) for x in v] for (p, ctx), v in times.items()})  # fmt: skip


def decode(runner, picks: dict[int, int], args, dev, bw: float) -> list[dict]:  # type: ignore[no-untyped-def]
    c = runner.config
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    divs = []
    for b in sorted(picks):  # every swept batch (divisor 1 where the rule's count won), ascending
        rule = pd.parts_for(b, c.num_kv_heads, sms, fewer=())
        divs.append((b, rule // picks[b]))
    while divs and divs[-1][1] == 1:
        divs.pop()
    tables = {"old": (), "new": args.fewer_ if args.fewer_ is not None else tuple(divs)}
    print("FEWER_PARTS new:", tables["new"], flush=True)
    name = torch.cuda.get_device_properties(dev).name
    dg = runner._graphs
    sets: dict = {"first": dg._graphs}  # keep the graphs captured so far alive; capture the tables' into a new pool
    dg._mempool = torch.cuda.graph_pool_handle()
    rows = []
    for b in args.batches:
        step = make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
        nbytes = weight_bytes(runner.weights, b) + kv_bytes(c, b * 512, 2)
        per: dict = {v: [] for v in tables}
        meds: dict = {v: [] for v in tables}
        for _ in range(args.rounds):
            for v, fewer in tables.items():
                pd.FEWER_PARTS = {name: fewer}  # keyed by device name (choose_num_parts)
                dg._graphs = sets.setdefault(v, {})
                t = timed_all(lambda: runner.execute(step), dev, 2, args.reps)  # noqa: B023
                per[v] += t
                meds[v].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
        for v in tables:
            ms = sorted(per[v])[len(per[v]) // 2] * 1e3
            rows.append(dict(batch=b, table=v, step_ms=ms, roofline_ms=nbytes / bw * 1e3, round_ms=meds[v]))
        o, n = rows[-2]["step_ms"], rows[-1]["step_ms"]
        wins = sum(x < y for x, y in zip(meds["new"], meds["old"], strict=True))
        print(f"| 7b | int4 | {b} | old {o:.3f} | new {n:.3f} | {n / o:.3f} | new lower in {wins}/{args.rounds} rounds"
              f" | roofline {rows[-1]['roofline_ms']:.3f}", flush=True)  # fmt: skip
    pd.FEWER_PARTS = {name: tables["new"]}
    return rows


@torch.inference_mode()
def host_breakdown(runner, step, dev, n: int = 300) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median microseconds of each host stage of a graph-replayed batch-1 step (DecodeGraphs.run's stages, in
    order, replayed here with a clock read between them; the GPU is idle at the start, as in the benchmark)."""
    for _ in range(3):
        runner.execute(step)
    dg = runner._graphs
    g = dg._graphs[next(k for k in dg._graphs if k[0] == 1)]
    names = ("check", "can_run", "check_slots", "lora_any", "send", "replay", "d2h_enqueue", "sync")
    laps: dict[str, list[float]] = {k: [] for k in (*names, "total", "execute")}
    clock = time.perf_counter
    for _ in range(n):
        torch.cuda.synchronize()
        t = [clock()]
        runner._check(step)
        t.append(clock())
        dg.can_run(step)
        t.append(clock())
        runner._adapters.check_slots(step.adapter_ids)
        t.append(clock())
        bool((step.adapter_ids >= 0).any())
        t.append(clock())
        g.staging.send(lambda buf: stage_step(buf, 1, dg._w, step))
        t.append(clock())
        g.graph.replay()
        t.append(clock())
        out = g.host_logits[:1]
        out.copy_(g.logits[:1], non_blocking=True)
        t.append(clock())
        torch.cuda.current_stream().synchronize()
        t.append(clock())
        for k, a, z in zip(names, t, t[1:], strict=False):
            laps[k].append(z - a)
        laps["total"].append(t[-1] - t[0])
        torch.cuda.synchronize()
        a = clock()
        runner.execute(step)
        laps["execute"].append(clock() - a)
    return {k: round(statistics.median(v) * 1e6, 2) for k, v in laps.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--replays", type=int, default=10)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--sweep-batches", default="1,2,4")
    ap.add_argument("--host", type=int, default=1)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--fewer", default=None, help="the new FEWER_PARTS as 'batch:div,...' (skips the picks)")
    args = ap.parse_args()
    args.fewer_ = None if args.fewer is None else tuple(tuple(int(v) for v in e.split(":")) for e in args.fewer.split(","))
    args.batches = [int(x) for x in args.batches.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, sweep={})  # fmt: skip
    step = make_step(1, 1, 512, [-1], runner.config.vocab_size, runner.num_kv_blocks)
    if args.host:
        res["host_us"] = host_breakdown(runner, step, dev)
        print("host us (batch 1):", json.dumps(res["host_us"]), flush=True)
    for b in (int(x) for x in args.sweep_batches.split(",") if x):
        res["sweep"][str(b)] = sweep(runner, b, args, dev)
        (args.out / "s9b-parts.json").write_text(json.dumps(res, indent=1))
    picks = {int(b): s["pick"] for b, s in res["sweep"].items()}
    res["picks"] = picks
    res["decode"] = decode(runner, picks, args, dev, res["copy_GBps"] * 1e9)
    res["wall_s"] = time.time() - t0
    (args.out / "s9b-parts.json").write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
