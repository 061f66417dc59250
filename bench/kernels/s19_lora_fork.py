# Its runs also timed a "fork-plain" variant (the forked shrink without PDL), removed from lora_early after them.
"""Session 19 (issue 4): the LoRA shrink off the critical path of the small-batch decode step (kernels.lora_early):
issued before the base GEMV on the same stream ("before") or on a forked branch of the CUDA graph ("fork"; its runs also
timed "fork-plain", the same with the forked shrink launched without PDL, since removed), against the shipped order (shrink after the GEMV, "lora"),
and "auto" (lora_early.POLICY: the mode per bucket), batches 1 / 2 / 4 / 8 / 16, rank-16 q/k/v/o adapters, one
adapter.

s19_lora_b1.py's setup and protocol (s18_lora_auto's capture / time_round): 7B int4 random model, fp16, 512 cached
tokens, decode CUDA graphs (the runner's defaults, PDL at these buckets), the shipped tuner table, ONE runner; every
variant's graph captured once (lora_early.EARLY set during its capture only), then --rounds rounds in which
the variants take turns: device ms (event-timed --replays back-to-back replays of the variant's own graph) and wall ms
(runner.execute, median of --reps steps). "ctl" is "lora" captured a second time (noise control). Each candidate's
logits are compared with lora's. Then, at batch 1, each candidate's graph is captured once more in CUDA graph debug
mode and its DOT dump summarised: the parents of layer 0's q/k/v shrink and expand (kernel names and edge text), which
shows whether the fork holds and what the cross-stream edges look like.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s19_lora_fork.py --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import lora_early  # noqa: E402
from inlaid_worker.model import kernel_lora  # noqa: E402
from random_model import SHAPES, TARGETS, make_runner, write_config  # noqa: E402
from s18_lora_auto import capture, time_round  # noqa: E402
from steps import BLOCK, load_adapters, make_step  # noqa: E402

CANDIDATES = ("before", "fork")
SETTINGS: dict[str, str | None] = {"base": "off", "lora": "off", "ctl": "off", "auto": None,
                                   **{c: c for c in CANDIDATES}}  # auto: lora_early.POLICY (as shipped)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    saved = lora_early.EARLY
    lora_early.EARLY = SETTINGS[name]
    try:
        yield
    finally:
        lora_early.EARLY = saved


def _debug_graph(real: type) -> object:
    """A stand-in for torch.cuda.CUDAGraph whose graphs keep their cudaGraph_t for debug_dump (keep_graph: torch
    2.11 destroys it at capture end even in debug mode)."""

    def make(*a, **k):  # type: ignore[no-untyped-def]
        return real(*a, keep_graph=True, **k)

    return make


def dot_summary(text: str) -> dict:
    """Layer 0's first _shrink3_kernel and _expand3_kernel nodes (cudaGraphDebugDotPrint's format: node statements
    '"graph_1_node_0"[... label="{KERNEL | {ID | 0 (topoId: 3) | NAME\\<\\<\\<grid...}"];', edges
    '"graph_1_node_0" -> "graph_1_node_1" [headlabel=0];'): their parents' kernel names (or node types) with the edge
    attributes, and the shrink's priority line."""
    labels, blocks = {}, {}
    for m in re.finditer(r'^"(graph_\d+_node_\d+)"\[(.*?)"\];\s*$', text, re.S | re.M):
        body = m.group(2)
        name = re.search(r"\| ([^|{}\s]+?)\\<\\<\\<", body)
        kind = re.search(r"\b(KERNEL|MEMCPY|MEMSET|EMPTY|EVENT_RECORD|WAIT_EVENT|HOST)\b", body)
        labels[m.group(1)] = name.group(1) if name else (kind.group(1) if kind else "?")
        blocks[m.group(1)] = body
    edges = re.findall(r'^"(graph_\d+_node_\d+)"\s*->\s*"(graph_\d+_node_\d+)"([^\n]*)$', text, re.M)
    parents: dict[str, list] = {}
    for a, b, rest in edges:
        parents.setdefault(b, []).append((a, labels.get(a, "?"), rest.strip()))
    order = sorted(labels, key=lambda n: (int(n.split("_")[1]), int(n.rsplit("_", 1)[1])))
    out: dict = dict(nodes=len(labels), edges=len(edges), edge_attrs=sorted({r.strip() for _, _, r in edges})[:12])
    for kind in ("_shrink3_kernel", "_expand3_kernel"):
        node = next((n for n in order if labels[n] == kind), None)
        prio = re.search(r"priority \| (-?\d+)", blocks.get(node or "", ""))
        out[kind] = dict(node=node, parents=parents.get(node or "", []), priority=prio.group(1) if prio else None)
    return out


def dot_dumps(runner, step, out: Path, names: list[str]) -> dict:  # type: ignore[no-untyped-def]
    """Each candidate's batch-1 graph captured in debug mode: its DOT dump (gzipped under out) and dot_summary."""
    res = {}
    real = torch.cuda.CUDAGraph
    for name in names:
        torch.cuda.CUDAGraph = _debug_graph(real)  # type: ignore[misc]
        try:
            with variant(name):
                _, g, _ = capture(runner, step, kernel_lora.GROUPED)
        finally:
            torch.cuda.CUDAGraph = real  # type: ignore[misc]
        path = out / f"dot-{name}.dot"
        g.graph.debug_dump(str(path))
        text = path.read_text()
        with gzip.open(out / f"dot-{name}.dot.gz", "wt") as f:
            f.write(text)
        path.unlink()
        res[name] = dot_summary(text)
        del g
        print(f"dot {name}: {json.dumps(res[name])[:600]}", flush=True)
    return res


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="no new batch after S seconds")
    ap.add_argument("--dot", default="lora,fork", help="variants whose batch-1 graph is DOT-dumped after the timing")
    ap.add_argument("--variants", default=",".join(SETTINGS), help="base and lora always; the others as listed")
    ap.add_argument("--tag", default="decode-2026-12-01-s19-lora-fork")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    batches = [int(b) for b in args.batches.split(",")]
    ctx = 512
    pool = max(batches) * (ctx // BLOCK + 1) * 2
    runner = make_runner(write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b"), "int4", dev, torch.float16,
                         pool, BLOCK, 32, "triton", True)  # fmt: skip
    c = runner.config
    slot = load_adapters(runner, 16, TARGETS["qkvo"], 1, "qkvo")[0]
    grouped = kernel_lora.GROUPED
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, context=ctx,
                     rank=16, targets="qkvo", shipped_early=lora_early.EARLY, points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    print(f"setup {time.time() - t0:.0f} s, copy {res['copy_GBps']:.0f} GB/s", flush=True)
    names = ["base", "lora", *(v for v in args.variants.split(",") if v in SETTINGS and v not in ("base", "lora"))]
    for b in batches:
        if time.time() - t0 > args.max_seconds:
            res.setdefault("skipped", []).append(b)
            continue
        steps = {True: make_step(b, 1, ctx, [slot] * b, c.vocab_size, pool),
                 False: make_step(b, 1, ctx, [-1] * b, c.vocab_size, pool)}  # fmt: skip
        graphs, errors = {}, {}
        for v in names:
            try:
                with variant(v):
                    graphs[v] = capture(runner, steps[v != "base"], grouped)
            except Exception as exc:  # noqa: BLE001 - a candidate whose capture fails is reported, not fatal
                errors[v] = repr(exc)[:1000]
                print(f"b{b} {v}: capture failed {errors[v]}", flush=True)
        live = [v for v in names if v in graphs]
        ref = graphs["lora"][2].float()
        check = {v: dict(rel=float((graphs[v][2].float() - ref).norm() / ref.norm()),
                         argmax=float((graphs[v][2].float().argmax(-1) == ref.argmax(-1)).float().mean()))
                 for v in live if v not in ("base", "lora")}  # fmt: skip
        rounds: dict = {v: dict(dev=[], wall=[]) for v in live}
        for _ in range(args.rounds):
            for v in live:
                key, g, _ = graphs[v]
                d, w = time_round(runner, steps[v != "base"], key, g, grouped, args)
                rounds[v]["dev"].append(d)
                rounds[v]["wall"].append(w)
        med = {v: {m: statistics.median(r[m]) for m in r} for v, r in rounds.items()}
        ratio = {v: [round(x / y, 4) for x, y in zip(rounds[v]["dev"], rounds["lora"]["dev"], strict=True)]
                 for v in live if v not in ("base", "lora")}  # fmt: skip
        point = dict(batch=b, check=check, errors=errors, rounds=rounds, median=med,
                     over_base={v: {m: round(med[v][m] / med["base"][m], 4) for m in ("dev", "wall")} for v in live},
                     lora_part_ms={v: round(med[v]["dev"] - med["base"]["dev"], 4) for v in live},
                     over_lora_dev=ratio, lower={v: sum(r < 1 for r in rs) for v, rs in ratio.items()},
                     median_over_lora_dev={v: round(med[v]["dev"] / med["lora"]["dev"], 4) for v in live})  # fmt: skip
        res["points"].append(point)
        path.write_text(json.dumps(res, indent=1))
        bd = med["base"]["dev"]
        print(f"b{b}: base dev {bd:.3f} wall {med['base']['wall']:.3f} | " + " | ".join(
            f"{v} {med[v]['dev']:.3f} (+{med[v]['dev'] - bd:.3f}) w {med[v]['wall']:.3f}" for v in live[1:]), flush=True)
        for v, rs in ratio.items():
            print(f"  b{b} {v}/lora dev {point['median_over_lora_dev'][v]:.4f} lower {point['lower'][v]}/{args.rounds}"
                  f" ({min(rs):.4f}-{max(rs):.4f}) logits rel {check[v]['rel']:.1e} argmax {check[v]['argmax']:.3f}"
                  f" | t {time.time() - t0:.0f} s", flush=True)  # fmt: skip
        del graphs
    if args.dot and 1 in batches:
        try:
            res["dot"] = dot_dumps(runner, make_step(1, 1, ctx, [slot], c.vocab_size, pool), args.out,
                                   [v for v in args.dot.split(",") if v in SETTINGS])
        except Exception as exc:  # noqa: BLE001 - reported
            res["dot_error"] = repr(exc)[:2000]
            print(f"dot failed: {res['dot_error']}", flush=True)
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
