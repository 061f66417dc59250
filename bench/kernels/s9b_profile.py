"""Session 9b: where the 7B int4 batch-1 decode step's time goes (issue 4, goal <= 1.5x the roofline).

One runner (random 7B int4 g128 weights, the shipped tuner table with INLAID_QMM_TUNED=1, 512 cached tokens, CUDA
graph + PDL as the engine runs it). Measured in one process:
1. host: runner.execute (the benchmark's step: staging, replay, logits to the host, sync), execute_device + sync,
   a bare replay + sync, and the graph's device time (back-to-back replays timed with events);
2. profile: torch.profiler around replays of the runner's own graph (PDL on, and PDL off for the kernels' isolated
   times); per kernel its duration and its EXPOSED time (how far it moves the end of the step: end minus the
   latest end of all earlier kernels; under PDL a kernel starts early and waits, so durations overlap);
3. ablations: the same forward (a replica of llama_fast.forward_fast for the "none" decode layout, no LoRA) captured
   with parts left out (front = embedding + cos/sin, head = lm_head + fp32 cast, rope, attention (rope + attention
   + merge), norms, SwiGLU, GEMVs), and variants (paged_decode impl "split", tiles prefetch on, context 1), each a
   CUDA graph with PDL; all graphs take turns round by round (R rounds x N back-to-back replays, event-timed).
Writes s9b-profile.json (and the chrome traces' kernel lists) to --out; prints a summary.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s9b_profile.py --out DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from graph_timing import replay_ms  # noqa: E402
from inlaid_worker.kernels import pdl  # noqa: E402
from inlaid_worker.kernels.fused_norm import add_rms_norm  # noqa: E402
from inlaid_worker.kernels.paged_decode import choose_num_parts, paged_decode  # noqa: E402
from inlaid_worker.kernels.rope_cache import rope_and_cache  # noqa: E402
from inlaid_worker.kernels.silu_mul import silu_mul  # noqa: E402
from inlaid_worker.model.decode_graphs import _FIELDS, stage_step  # noqa: E402
from inlaid_worker.model.linear import linear  # noqa: E402
from inlaid_worker.model.quant_weights import QuantMatrix  # noqa: E402
from inlaid_worker.model.rope import cos_sin  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from steps import BLOCK, make_step, timed_all  # noqa: E402

# variant name -> (parts left out, options)
VARIANTS: dict[str, tuple[frozenset[str], dict]] = {
    "full": (frozenset(), {}),
    "-front": (frozenset({"front"}), {}),
    "-head": (frozenset({"head"}), {}),
    "-rope": (frozenset({"rope"}), {}),
    "-attn": (frozenset({"attn"}), {}),
    "-norm": (frozenset({"norm"}), {}),
    "-silu": (frozenset({"silu"}), {}),
    "-gemv": (frozenset({"gemv"}), {}),
    "gemv-only": (frozenset({"front", "head", "attn", "norm", "silu"}), {}),
    "attn-split": (frozenset(), {"impl": "split"}),
    "tiles-pf1": (frozenset(), {"tiles_prefetch": 1}),
    "full-pdl0": (frozenset(), {"pdl": 0}),
}


def forward_variant(w, c, f: torch.Tensor, tables: torch.Tensor, kv: torch.Tensor, parts: int,
                    inv_freq: torch.Tensor, drop: frozenset[str], opt: dict, stat: dict) -> torch.Tensor:  # type: ignore[no-untyped-def]  # noqa: E501
    """llama_fast.forward_fast (DecodeLayout "none", no LoRA) + the logits, with the parts in `drop` left out."""
    b = f.shape[1]
    if "front" in drop:
        h, cos, sin = stat["h"], stat["cos"], stat["sin"]
    else:
        h = F.embedding(f[0], w.embed)
        cs, sn = cos_sin(inv_freq, f[1], h.dtype)
        cos, sin = cs[:, 0], sn[:, 0]
    eps, scale, q_end, inter = c.rms_norm_eps, c.head_dim**-0.5, c.q_size, c.intermediate_size

    def lin(x: torch.Tensor, m, n: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return stat["out"][n] if "gemv" in drop else linear(x, m)

    def norm(x: torch.Tensor, weight: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        return x if "norm" in drop else add_rms_norm(x, weight, eps, residual=res)

    x = norm(h, w.layers[0].input_norm)
    for i, layer in enumerate(w.layers):
        qkv = lin(x, layer.qkv, c.q_size + 2 * c.kv_size)
        if "attn" in drop:
            attn = qkv[:, :q_end]
        else:
            if "rope" in drop:
                q = qkv[:, :q_end].view(b, c.num_heads, c.head_dim)
            else:
                q = rope_and_cache(qkv, cos, sin, f[2], kv[i, 0], kv[i, 1], c.num_heads)
            impl = opt.get("impl", "tiles")
            attn = paged_decode(q, kv[i, 0], kv[i, 1], tables, f[3], scale, parts if impl == "tiles" else None,
                                impl=impl, tiles_prefetch=opt.get("tiles_prefetch")).reshape(b, -1)  # fmt: skip
        o = lin(attn, layer.o, c.hidden_size)
        x = norm(o, layer.post_norm, h)
        gate_up = lin(x, layer.gate_up, 2 * inter)
        act = gate_up[:, :inter] if "silu" in drop else silu_mul(gate_up)
        down = lin(act, layer.down, c.hidden_size)
        nxt = w.layers[i + 1].input_norm if i + 1 < len(w.layers) else w.norm
        x = norm(down, nxt, h)
    return x if "head" in drop else F.linear(x, w.lm_head).float()


def capture(body: Callable[[], torch.Tensor], mode: int, pool) -> torch.cuda.CUDAGraph:  # type: ignore[no-untyped-def]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), pdl.scope(mode):
        body()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=pool), pdl.scope(mode):
        body()
    return g


def category(name: str) -> str:
    n = name.lower()
    for key, cat in (("gemv", "gemv"), ("_tc", "gemv"), ("rope_cache", "rope"), ("_decode", "attention"),
                     ("_split", "attention"), ("merge", "merge"), ("rms_norm", "norm"), ("silu", "silu"),
                     ("nvjet", "lm_head"), ("gemm", "lm_head"), ("memcpy", "memcpy")):  # fmt: skip
        if key in n:
            return cat
    return "torch-elementwise"


def trace_kernels(prof, path: Path) -> list[dict]:  # type: ignore[no-untyped-def]
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    ks = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e]
    ks.sort(key=lambda e: e["ts"])
    return [{"name": e["name"][:90], "ts": float(e["ts"]), "dur": float(e["dur"])} for e in ks]


def attribute(kernels: list[dict], per_step: int, steps: int) -> dict:
    """Per category: summed duration and exposed time (end minus latest earlier end) per step, and the gap (idle
    time before a kernel starts after the latest earlier end), averaged over the last `steps` steps."""
    out: dict[str, dict[str, float]] = {}
    spans = []
    for s in range(steps):
        ks = kernels[len(kernels) - (steps - s) * per_step:][:per_step]
        latest = ks[0]["ts"]
        spans.append(max(k["ts"] + k["dur"] for k in ks) - ks[0]["ts"])
        for k in ks:
            end = k["ts"] + k["dur"]
            d = out.setdefault(category(k["name"]), dict(count=0, dur_us=0.0, exposed_us=0.0, gap_us=0.0))
            d["count"] += 1 / steps
            d["dur_us"] += k["dur"] / steps
            d["exposed_us"] += max(0.0, end - max(latest, k["ts"])) / steps
            d["gap_us"] += max(0.0, k["ts"] - latest) / steps
            latest = max(latest, end)
    return {"span_us": statistics.median(spans), "by_category": out}


def profile_graph(g: torch.cuda.CUDAGraph, out: Path, tag: str, steps: int = 5) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            g.replay()
        torch.cuda.synchronize()
    kernels = trace_kernels(prof, Path(tempfile.mkdtemp()) / f"{tag}.json")
    per_step = len(kernels) // steps
    res = attribute(kernels, per_step, steps)
    res["kernels_per_step"] = per_step
    last = kernels[-per_step:]
    t0 = last[0]["ts"]
    res["last_step"] = [dict(k, ts=round(k["ts"] - t0, 2)) for k in last]
    (out / f"s9b-trace-{tag}.json").write_text(json.dumps(res["last_step"]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t_start = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    pool = 4 * -(-args.context // BLOCK) * 4
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, pool, BLOCK, 4, "triton", True)
    c, w = runner.config, runner.weights
    step = make_step(1, 1, args.context, [-1], c.vocab_size, pool)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, context=args.context, copy_GBps=copy_bandwidth(dev) / 1e9)  # fmt: skip
    bw = res["copy_GBps"] * 1e9
    gemv_bytes = sum(m.nbytes() for layer in w.layers for m in (layer.qkv, layer.o, layer.gate_up, layer.down)
                     if isinstance(m, QuantMatrix))  # fmt: skip
    kvb = kv_bytes(c, args.context, 2)
    total = weight_bytes(w, 1) + kvb
    res["bytes"] = dict(total=total, gemv=gemv_bytes, kv=kvb, lm_head=w.lm_head.nbytes, other=total - gemv_bytes - kvb
                        - w.lm_head.nbytes)  # fmt: skip
    res["roofline_us"] = {k: v / bw * 1e6 for k, v in res["bytes"].items()}
    print(f"copy {res['copy_GBps']:.0f} GB/s, roofline {res['roofline_us']}", flush=True)

    # 1. host: the runner's step as the benchmark times it
    for _ in range(3):
        runner.execute(step)
    dg = runner._graphs
    key = next(k for k in dg._graphs if k[0] == 1)
    rg = dg._graphs[key].graph
    host: dict[str, list[float]] = {"execute": [], "execute_device": [], "replay_sync": [], "replay_device": []}
    for _ in range(args.rounds):
        host["execute"] += timed_all(lambda: runner.execute(step), dev, 2, args.reps)
        host["execute_device"] += timed_all(lambda: runner.execute_device(step), dev, 2, args.reps)
        host["replay_sync"] += timed_all(rg.replay, dev, 2, args.reps)
        host["replay_device"].append(replay_ms(rg, args.replays) / 1e3)
    # host-side pieces alone (no GPU work): _check, stage_step into the pinned buffer
    g0 = dg._graphs[key]
    pieces = {"check": lambda: runner._check(step),
              "stage": lambda: stage_step(g0.staging.host, 1, dg._w, step),
              "any_lora": lambda: bool((step.adapter_ids >= 0).any()),
              "check_slots": lambda: runner._adapters.check_slots(step.adapter_ids)}  # fmt: skip
    for name, fn in pieces.items():
        for _ in range(100):
            fn()
        t0 = time.perf_counter()
        for _ in range(2000):
            fn()
        host[f"cpu_{name}"] = [(time.perf_counter() - t0) / 2000]
    res["host_ms"] = {k: statistics.median(v) * 1e3 for k, v in host.items()}
    print("host ms", json.dumps({k: round(v, 4) for k, v in res["host_ms"].items()}), flush=True)

    # 2. profile of the runner's own graph (PDL on), and with PDL off (kernels' isolated durations)
    res["profile_pdl1"] = profile_graph(rg, args.out, "pdl1")
    runner.decode_pdl = 0
    runner.execute(step)
    key0 = next(k for k in dg._graphs if k[0] == 1 and k[2] == 0)
    res["profile_pdl0"] = profile_graph(dg._graphs[key0].graph, args.out, "pdl0")
    runner.decode_pdl = 1
    for tag in ("pdl1", "pdl0"):
        p = res[f"profile_{tag}"]
        print(f"profile {tag}: span {p['span_us']:.1f} us, {p['kernels_per_step']} kernels", flush=True)
        for cat, d in sorted(p["by_category"].items(), key=lambda kv: -kv[1]["exposed_us"]):
            print(f"  {cat:18s} n {d['count']:6.1f} dur {d['dur_us']:8.1f} exposed {d['exposed_us']:8.1f} "
                  f"gap {d['gap_us']:6.1f}", flush=True)  # fmt: skip

    # 3. ablation graphs over one static staged buffer (the runner's graph's copy of this step)
    width = dg._w
    f_host = torch.zeros(1 * (_FIELDS + width), dtype=torch.int32, pin_memory=True)
    stage_step(f_host, 1, width, step)
    buf = f_host.to(dev)
    f, tables = buf[:_FIELDS].view(_FIELDS, 1), buf[_FIELDS:].view(1, width)
    step1 = make_step(1, 1, 1, [-1], c.vocab_size, pool)
    f1_host = torch.zeros_like(f_host)
    stage_step(f1_host, 1, width, step1)
    buf1 = f1_host.to(dev)
    parts = choose_num_parts(1, c.num_kv_heads, dev)
    h0 = F.embedding(f[0], w.embed).clone()
    cs, sn = cos_sin(runner._inv_freq, f[1], torch.float16)
    stat = {"h": h0, "cos": cs[:, 0].clone(), "sin": sn[:, 0].clone(),
            "out": {n: torch.randn(1, n, device=dev, dtype=torch.float16) * 0.1
                    for n in (c.q_size + 2 * c.kv_size, c.hidden_size, 2 * c.intermediate_size)}}  # fmt: skip
    mempool = torch.cuda.graph_pool_handle()
    graphs = {}
    for name in args.variants.split(","):
        drop, opt = VARIANTS[name]
        body = functools.partial(forward_variant, w, c, f, tables, runner.kv_cache, parts, runner._inv_freq, drop,
                                 opt, stat)  # fmt: skip
        graphs[name] = capture(body, opt.get("pdl", 1), mempool)
    graphs["runner"] = rg
    times: dict[str, list[float]] = {k: [] for k in [*graphs, "full-ctx1"]}
    clean = buf.clone()
    for _ in range(args.rounds):
        for name, g in graphs.items():
            times[name].append(replay_ms(g, args.replays))
        buf.copy_(buf1)
        times["full-ctx1"].append(replay_ms(graphs["full"], args.replays))
        buf.copy_(clean)
    res["ablation_ms"] = {k: statistics.median(v) for k, v in times.items()}
    res["ablation_rounds_ms"] = {k: [round(x, 4) for x in v] for k, v in times.items()}
    full = res["ablation_ms"]["full"]
    print("ablations (device ms per step, delta vs full):", flush=True)
    for k, v in res["ablation_ms"].items():
        print(f"  {k:12s} {v:8.4f}  {v - full:+8.4f}", flush=True)
    res["wall_s"] = time.time() - t_start
    (args.out / "s9b-profile.json").write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
