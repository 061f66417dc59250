"""Session 13 (helper H1): L2 prefetch of the next GEMVs' weights from the latency-bound decode kernels
(kernels/l2_prefetch.py), on the 7B int4 random model (bench/engine/random_model), 512 cached tokens, PDL mode 1,
the shipped tuner table (INLAID_QMM_TUNED=1).

1. chains (--chain-batches): CUDA graphs under PDL of 32 layers' real kernels with the runner's weights, prefetch
   variants alternating round by round: "attn" = 32 x row_rope_decode (batch 1-2 default attention), "attn+o" =
   32 x [row_rope_decode -> o GEMV] (the attention prefetching o: variants o0 / o1), "o" = 32 x o GEMV alone,
   "norm+gu" = 32 x [add_rms_norm -> gate/up GEMV (+ SwiGLU at batch 1, as the step's policy)] (the norm
   prefetching a fraction of gate/up), "gu" = 32 x gate/up alone. Reported: us a layer; the GEMV's share of a
   pair (pair - the other kernel's chain alone) and its effective bandwidth.
2. the decode step (--batches): every variant's graph (kernels.l2_prefetch.SETTING set at its capture; the bucket's
   policy fusion) captured once on ONE runner, then --rounds rounds in which the variants take turns (event-timed
   --replays back-to-back replays of each graph). Logits of every variant must equal "off"'s bit for bit.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s13_l2pf.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import l2_prefetch, pdl  # noqa: E402
from inlaid_worker.model import decode_graphs  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from steps import BLOCK, make_step  # noqa: E402

KEEP: list = []  # every captured graph stays alive (a pool whose graphs died cannot be captured into again)

STEP_VARIANTS = {
    1: "off;m1,o1;m1,o1,agu.25;m1,o1,agu.25,ngu.25;m1,o1,agu.25,ngu.25,nq.25;m1,o1,agu.5,ngu.25,nq.5;"
    "m2,o1,agu.25,ngu.25,nq.25;m3,o1,agu.25,ngu.25,nq.25;m1,o0,ngu.25,nq.25",
    2: "off;m1,o1;m1,o1,agu.25,ngu.25,nq.25;m1,o1,agu.5,ngu.25,nq.5;m2,o1,agu.25,ngu.25,nq.25",
    4: "off;m1,o0,ngu.25,nq.25;m1,o0,ngu.5,nq.5",
}


def _bytes(w) -> int:  # type: ignore[no-untyped-def]
    return sum(t.nbytes for t in (w.qweight, w.scales, w.qzeros))


def _graph(fn) -> torch.cuda.CUDAGraph:  # type: ignore[no-untyped-def]
    fn()  # warm-up (compiles, tunes)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    KEEP.append(g)
    return g


@torch.inference_mode()
def chains(runner, b: int, args) -> dict:  # type: ignore[no-untyped-def]
    """The chain microbenchmark at batch b (module docstring, 1)."""
    from inlaid_worker.kernels.decode_row import row_rope_decode
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.paged_decode import row_rope_for
    from inlaid_worker.kernels.quant_swiglu import gemv_swiglu
    from inlaid_worker.kernels.silu_mul import silu_mul
    from inlaid_worker.model.llama_fast import _L2Plan, _single

    c, dev = runner.config, runner.device
    layers = runner.weights.layers
    hd, heads, kvh = c.head_dim, c.num_heads, c.num_kv_heads
    ctx_len = 512
    per = ctx_len // BLOCK
    tables = torch.arange(b * per, dtype=torch.int32, device=dev).reshape(b, per)
    ctx = torch.full((b,), ctx_len, dtype=torch.int32, device=dev)
    slots = (tables[:, -1].long() * BLOCK + (ctx_len - 1) % BLOCK).to(torch.int64)
    gen = torch.Generator(device=dev).manual_seed(1)
    qkv = (torch.randn(b, (heads + 2 * kvh) * hd, generator=gen, device=dev) * 0.5).half()
    ang = torch.rand(b, hd, generator=gen, device=dev) * 6.28
    cos, sin = ang.cos().half(), ang.sin().half()
    base = row_rope_for(b, heads // kvh, dev)
    if base is None:
        return dict(batch=b, skipped="row attention with rotary is not the default at this batch")
    h = (torch.randn(b, c.hidden_size, generator=gen, device=dev) * 0.1).half()
    y0 = (torch.randn(b, c.hidden_size, generator=gen, device=dev) * 0.1).half()
    attn_in = (torch.randn(b, heads * hd, generator=gen, device=dev) * 0.1).half()
    scale = hd**-0.5
    swiglu = b == 1

    def plan(setting: str, kind: str, layer):  # type: ignore[no-untyped-def]
        s = l2_prefetch.parse(setting)
        if s is None:
            return None
        p = _L2Plan(s, h)
        return p.attention(layer) if kind == "attn" else p.post_norm(layer)

    def run_attn(setting: str, with_o: bool):  # type: ignore[no-untyped-def]
        plans = [plan(setting, "attn", ly) for ly in layers]

        def fn() -> None:
            for i, ly in enumerate(layers):
                a = row_rope_decode(qkv, cos, sin, slots, runner.kv_cache[i, 0], runner.kv_cache[i, 1], tables, ctx,
                                    scale, heads, base=base, l2pf=plans[i]).reshape(b, -1)  # fmt: skip
                if with_o:
                    ly.o(a)

        return fn

    def run_o() -> None:
        for ly in layers:
            ly.o(attn_in)

    def run_norm(setting: str, with_gu: bool):  # type: ignore[no-untyped-def]
        plans = [plan(setting, "norm", ly) for ly in layers]

        def fn() -> None:
            for i, ly in enumerate(layers):
                x = add_rms_norm(y0, ly.post_norm, 1e-5, residual=h, l2pf=plans[i])
                if with_gu:
                    gu = _single(ly.gate_up)
                    gemv_swiglu(x, gu) if swiglu and gu is not None else silu_mul(ly.gate_up(x))

        return fn

    def run_gu() -> None:
        for ly in layers:
            gu = _single(ly.gate_up)
            gemv_swiglu(h, gu) if swiglu and gu is not None else silu_mul(ly.gate_up(h))

    variants = {"attn": run_attn("off", False), "o": run_o, "attn+o": run_attn("off", True)}
    for s in filter(None, args.chain_attn.split(";")):
        variants[f"attn[{s}]"] = run_attn(s, False)
        variants[f"attn+o[{s}]"] = run_attn(s, True)
    variants["norm"] = run_norm("off", False)
    variants["gu"] = run_gu
    variants["norm+gu"] = run_norm("off", True)
    for s in filter(None, args.chain_norm.split(";")):
        variants[f"norm[{s}]"] = run_norm(s, False)
        variants[f"norm+gu[{s}]"] = run_norm(s, True)
    graphs = {}
    with pdl.scope(1):
        for name, fn in variants.items():
            graphs[name] = _graph(fn)
    times: dict = {k: [] for k in graphs}
    for _ in range(args.rounds):
        for k, g in graphs.items():
            times[k].append(replay_ms(g, args.replays) * 1e3 / len(layers))  # us a layer
    med = {k: statistics.median(v) for k, v in times.items()}
    o_b = _bytes(_single(layers[0].o))
    gu_b = _bytes(_single(layers[0].gate_up))
    out = dict(batch=b, us_per_layer=med, rounds_us=times, o_bytes=o_b, gate_up_bytes=gu_b, derived={})
    print(f"== chains batch {b} (us a layer, median of {args.rounds} rounds)", flush=True)
    for k, v in med.items():
        extra = ""
        if k.startswith("attn+o"):
            o_us = v - med["attn"]
            extra = f"  o share {o_us:.2f} us = {o_b / o_us / 1e3:.0f} GB/s" if o_us > 0 else "  o share <= 0"
            out["derived"][k] = o_us
        elif k.startswith("norm+gu"):
            pre = "norm" + k[len("norm+gu") :]
            gu_us = v - med.get(pre, med["norm"])
            extra = f"  gate/up share {gu_us:.2f} us = {gu_b / gu_us / 1e3:.0f} GB/s" if gu_us > 0 else ""
            out["derived"][k] = gu_us
        elif k == "o":
            extra = f"  alone {o_b / v / 1e3:.0f} GB/s"
        elif k == "gu":
            extra = f"  alone {gu_b / v / 1e3:.0f} GB/s"
        print(f"  {k:40s} {v:7.2f}{extra}", flush=True)
    return out


def key_of(runner, b: int, fusion: str) -> tuple:  # type: ignore[no-untyped-def]
    return next(k for k in runner._graphs._graphs if k[0] == b and not k[1] and k[3] == fusion)


@torch.inference_mode()
def point(runner, b: int, variants: list[str], args, bw: float) -> dict:  # type: ignore[no-untyped-def]
    """The decode step at batch b, the variants alternating (module docstring, 2)."""
    c = runner.config
    fusion = decode_graphs.policy_fusion(decode_graphs.bucket_for(b))
    runner.decode_fusion = fusion
    step = make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    logits, graphs = {}, {}
    dg = runner._graphs
    for v in variants:
        l2_prefetch.SETTING = l2_prefetch.parse(v)
        runner.kv_cache.copy_(kv0)
        logits[v] = runner.execute(step).clone()  # warm-up + capture
        runner.kv_cache.copy_(kv0)
        logits[v + "@replay"] = runner.execute(step).clone()
        key = key_of(runner, b, fusion)
        graphs[v] = (key, dg._graphs.pop(key))
        KEEP.append(graphs[v])
    l2_prefetch.SETTING = None
    base = logits[variants[0]]
    # split-K GEMVs add partials with atomics (summation order varies), so even "off" replayed differs in low bits:
    # compare each variant's relative error with off's own replay spread
    identical = {v: bool(torch.equal(lg, base)) for v, lg in logits.items()}
    rel = {v: float((lg.float() - base.float()).norm() / base.float().norm()) for v, lg in logits.items()}
    argmax = {v: bool(torch.equal(lg.argmax(-1), base.argmax(-1))) for v, lg in logits.items()}
    dev_ms: dict = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            dev_ms[v].append(round(replay_ms(graphs[v][1].graph, args.replays), 4))
    roof = (weight_bytes(runner.weights, b) + kv_bytes(c, b * 512, 2)) / bw * 1e3
    med = {v: statistics.median(x) for v, x in dev_ms.items()}
    out = dict(batch=b, fusion=fusion, roofline_ms=roof, identical=identical, rel=rel, argmax_same=argmax,
               rounds_device_ms=dev_ms, device_ms=med)  # fmt: skip
    ref = med[variants[0]]
    for v in variants:
        wins = sum(x < y for x, y in zip(dev_ms[v], dev_ms[variants[0]], strict=True))
        print(f"batch {b} {fusion:7s} {v:34s} device {med[v]:.4f} ms ({med[v] / ref:.3f}x off, lower in {wins}/"
              f"{args.rounds}) = {med[v] / roof:.2f}x roofline {roof:.3f} | logits rel {rel[v]:.1e} (replay "
              f"{rel[v + '@replay']:.1e}; off replay {rel[variants[0] + '@replay']:.1e}) argmax {argmax[v]}", flush=True)  # fmt: skip
    return out


def report(res: dict, dest: Path) -> None:
    lines = [f"# L2 prefetch of the next GEMVs' weights (session 13, helper H1; {res['date']}, {res['device']})", "",
             f"command: `{res['command']}`; torch {res['torch']}; L2 {res['l2_bytes'] / 2**20:.0f} MiB; copy "
             f"{res['copy_GBps']:.0f} GB/s; wall {res.get('wall_s', 0):.0f} s", ""]  # fmt: skip
    for ch in res["chains"]:
        if "skipped" in ch:
            continue
        lines += [
            f"## Chains, batch {ch['batch']} (us a layer, median of the rounds; 32 layers, PDL mode 1)",
            "",
            "| chain | us/layer | GEMV share us | GEMV GB/s |",
            "|---|---|---|---|",
        ]
        for k, v in ch["us_per_layer"].items():
            share = ch["derived"].get(k)
            nb = ch["o_bytes"] if k.startswith("attn+o") else ch["gate_up_bytes"]
            gb = f"{nb / share / 1e3:.0f}" if share and share > 0 else ""
            lines.append(f"| {k} | {v:.2f} | {'' if share is None else f'{share:.2f}'} | {gb} |")
        lines.append("")
    for p in res["points"]:
        ref = p["device_ms"][next(iter(p["device_ms"]))]
        lines += [
            f"## Decode step, batch {p['batch']} (fusion {p['fusion']}, roofline {p['roofline_ms']:.3f} ms)",
            "",
            "| variant | device ms | x off | x roofline | rounds lower than off | logits rel. err vs off (replay) | argmax same |",
            "|---|---|---|---|---|---|---|",
        ]
        rounds = p["rounds_device_ms"]
        first = next(iter(rounds))
        for v, ms in p["device_ms"].items():
            wins = sum(x < y for x, y in zip(rounds[v], rounds[first], strict=True))
            lines.append(f"| {v} | {ms:.4f} | {ms / ref:.3f} | {ms / p['roofline_ms']:.2f} | {wins}/{len(rounds[v])} "
                         f"| {p['rel'][v]:.1e} ({p['rel'][v + '@replay']:.1e}) | {p['argmax_same'][v]} |")  # fmt: skip
        lines.append("")
    (dest / "s13-l2pf.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--chain-batches", default="1")
    ap.add_argument("--chain-attn", default="m1,o1;m2,o1;m3,o1;m1,o1,c65536")
    ap.add_argument("--chain-norm", default="m1,ngu.125,np64;m1,ngu.25,np64;m1,ngu.25,np128;m1,ngu.5,np128")
    ap.add_argument(
        "--variants",
        default="",
        help="';'-separated settings for every batch, or per batch '1:s;s|2:s;s' (default STEP_VARIANTS)",
    )
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--replays", type=int, default=20)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    props = torch.cuda.get_device_properties(dev)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv,
                     command="python3 " + " ".join(sys.argv), l2_bytes=props.L2_cache_size, chains=[], points=[])  # fmt: skip
    print(f"L2 {props.L2_cache_size / 2**20:.1f} MiB, copy {res['copy_GBps']:.0f} GB/s", flush=True)
    for b in (int(x) for x in args.chain_batches.split(",") if x):
        try:
            res["chains"].append(chains(runner, b, args))
        except Exception as exc:  # noqa: BLE001  (keep the step measurement)
            import traceback

            traceback.print_exc()
            res["chains"].append(dict(batch=b, skipped=repr(exc)))
        (args.out / "s13-l2pf.json").write_text(json.dumps(res, indent=1))
    for b in (int(x) for x in args.batches.split(",") if x):
        by_batch = dict(x.split(":", 1) for x in args.variants.split("|")) if ":" in args.variants else {}
        text = by_batch.get(str(b), "" if by_batch else args.variants)
        variants = (text or STEP_VARIANTS.get(b, "off;m1,o0,ngu.25,nq.25")).split(";")
        if variants[0] != "off":
            variants.insert(0, "off")
        res["points"].append(point(runner, b, variants, args, res["copy_GBps"] * 1e9))
        (args.out / "s13-l2pf.json").write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    (args.out / "s13-l2pf.json").write_text(json.dumps(res, indent=1))
    report(res, args.out)
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
