"""Session 18 (issue 4): the cluster-merged row attention (row_cluster.cu) against the shipped Triton row kernel.

Three phases (subcommands), each writing DIR/s18-cluster-<phase>.json:
- check: correctness against decode_row.row_rope_reference (torch) and the shipped row_rope_decode at batch 1 / 2 / 4,
  contexts 1, 15, 16, 17, 511, 512, 2048 (a batch's rows take different contexts; batch 4 has a padding row: context 0,
  slot -1), cache blocks of 16 and 32 tokens, fp16 qkv and fp32 sums, every cluster config; the KV write must equal the
  reference's bit for bit; a second launch the same output; a PDL graph replay (scope 1, the shipped row kernel
  before it) the eager output.
- iso: the kernel alone at the 7B shape (32 heads, 512 cached tokens, blocks of 16), a CUDA graph of 32 launches over
  32 layers' caches, PDL off and on (pdl.scope(1): each launch waits on the previous one), variants alternating
  --iso-rounds rounds, per launch us.
- step: the 7B int4 decode step (bench/engine/random_model, INLAID_QMM_TUNED=1, 512 cached tokens), s16_b1's
  protocol (s12_norm.point: every variant's graph captured once on ONE runner, --rounds alternating rounds, device ms =
  event-timed mean of --replays replays); a variant "FUSION@cl=CxW" swaps model.llama_fast.row_rope_decode for the
  cluster kernel (C CTAs of W warps) while its graph is captured, "FUSION@ctl" is the shipped step captured again.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s18_cluster.py PHASE --out DIR
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

import row_cluster  # noqa: E402
from graph_timing import replay_ms  # noqa: E402
from inlaid_worker.kernels import decode_row, pdl  # noqa: E402
from inlaid_worker.model import llama_fast  # noqa: E402

REAL_ATTN = llama_fast.row_rope_decode
CALLS = {"cluster": 0, "fallback": 0}
KEEP: list = []
CONFIGS = ((8, 4), (4, 8), (16, 2), (4, 4), (8, 2), (2, 4), (4, 2), (1, 8))


def parse_cfg(text: str) -> tuple[int, int]:
    c, _, w = text.partition("x")
    return int(c), int(w)


def parse_variant(text: str) -> dict:
    """"CxW[:nc][:dN][:rN][:l0][:m]" -> row_cluster_decode's keywords (cluster, warps and the bench-only options)."""
    cfg, *flags = text.split(":")
    cl, w = parse_cfg(cfg)
    return dict(cluster=cl, warps=w, diag=sum(int(f[1:]) for f in flags if f.startswith("d")),
                cluster_attr="nc" not in flags, minb=sum(int(f[1:]) for f in flags if f.startswith("r")),
                lookahead=int("l0" not in flags), mbar=int("m" in flags))  # fmt: skip


def cluster_attn(spec: str):  # type: ignore[no-untyped-def]
    """A stand-in for llama_fast.row_rope_decode: the cluster kernel (spec: parse_variant's) where it supports the
    call, else the shipped."""
    kw = parse_variant(spec)

    def attn(qkv, cos, sin, slot_mapping, k_cache, v_cache, block_tables, context_lens, scale, heads,
             num_parts=None, base=None, sums=False, **opts):  # type: ignore[no-untyped-def]  # fmt: skip
        if row_cluster.unsupported(qkv, cos, sin, k_cache, v_cache, block_tables, context_lens, slot_mapping, heads, sums):
            CALLS["fallback"] += 1
            return REAL_ATTN(qkv, cos, sin, slot_mapping, k_cache, v_cache, block_tables, context_lens, scale, heads,
                             num_parts=num_parts, base=base, sums=sums, **opts)  # fmt: skip
        CALLS["cluster"] += 1
        return row_cluster.row_cluster_decode(qkv, cos, sin, slot_mapping, k_cache, v_cache, block_tables,
                                              context_lens, scale, heads, sums=sums, **kw)  # fmt: skip

    return attn


def variant(name: str) -> str:
    """s12_norm's hook: "FUSION@cl=CxW" -> the cluster attention while the graph is captured; else the shipped one."""
    fusion, _, opt = name.partition("@")
    cl = [p.split("=", 1)[1] for p in opt.split("/") if p.startswith("cl=")]
    llama_fast.row_rope_decode = cluster_attn(cl[0]) if cl else REAL_ATTN
    return fusion


def _case(b: int, lens: list[int], bs: int, sums: bool, dev: torch.device, seed: int) -> dict:
    heads, d = 32, 128
    g = torch.Generator(device="cpu").manual_seed(seed)
    per = max(1, -(-max(lens) // bs))
    blocks = b * per + 3
    kc = torch.randn(blocks, bs, heads, d, generator=g).to(dev, torch.float16)
    vc = torch.randn(blocks, bs, heads, d, generator=g).to(dev, torch.float16)
    # disjoint rows (as in the engine: no row's context holds a slot another row writes this step)
    tables = torch.randperm(blocks, generator=g)[: b * per].reshape(b, per).to(dev, torch.int32)
    slots = torch.tensor([int(tables[i, (n - 1) // bs]) * bs + (n - 1) % bs if n > 0 else -1
                          for i, n in enumerate(lens)], dtype=torch.int32, device=dev)  # fmt: skip
    qkv = torch.randn(b, 3 * heads * d, generator=g).to(dev)
    pos = torch.tensor(lens, dtype=torch.float32).clamp(min=1)[:, None] - 1
    ang = pos * (10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d))[None]
    ang = torch.cat((ang, ang), 1)
    cos, sin = ang.cos().to(dev, torch.float16), ang.sin().to(dev, torch.float16)
    return dict(qkv=qkv if sums else qkv.half(), qkv16=qkv.half(), cos=cos, sin=sin, slots=slots, k=kc, v=vc,
                tables=tables, lens=torch.tensor(lens, dtype=torch.int32, device=dev), heads=heads)  # fmt: skip


def check(args: argparse.Namespace, dev: torch.device) -> dict:
    """Phase check (module docstring)."""
    contexts = {1: [[1], [15], [16], [17], [511], [512], [2048]], 2: [[17, 512], [2048, 1], [16, 15]],
                4: [[511, 0, 2048, 16], [1, 17, 512, 15]]}  # fmt: skip
    cfgs = [(c, parse_variant(c)) for c in args.configs.split(",")]
    rows, worst = [], 0.0
    seed = 0
    for b, sets in contexts.items():
        for lens in sets:
            for bs in (16, 32):
                for sums in (False, True):
                    seed += 1
                    c = _case(b, lens, bs, sums, dev, seed)
                    scale = 128**-0.5
                    kr, vr = c["k"].clone(), c["v"].clone()
                    ref = decode_row.row_rope_reference(c["qkv16"], c["cos"], c["sin"], c["slots"], kr, vr,
                                                        c["tables"], c["lens"], scale, c["heads"]).float()  # fmt: skip
                    ship = None
                    if bs == 16:
                        ks, vs = c["k"].clone(), c["v"].clone()
                        ship = decode_row.row_rope_decode(c["qkv"], c["cos"], c["sin"], c["slots"], ks, vs,
                                                          c["tables"], c["lens"], scale, c["heads"],
                                                          sums=sums).float()  # fmt: skip
                    for name, kw in cfgs:
                        kk, vv = c["k"].clone(), c["v"].clone()
                        out, again = (row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slots"], kk, vv,
                                                                     c["tables"], c["lens"], scale, c["heads"],
                                                                     sums=sums, gdc=0, **kw) for _ in range(2))  # fmt: skip
                        torch.cuda.synchronize()
                        err = float((out.float() - ref).abs().max())
                        scale_ref = float(ref.abs().max()) or 1.0
                        r = dict(batch=b, lens=lens, block=bs, sums=sums, cfg=name, max_abs=err,
                                 rel=err / scale_ref, kv_equal=bool(torch.equal(kk, kr) and torch.equal(vv, vr)),
                                 rerun_same=bool(torch.equal(out, again)), finite=bool(torch.isfinite(out).all()),
                                 vs_shipped=None if ship is None else float((out.float() - ship).abs().max()))  # fmt: skip
                        if 0 in lens:
                            r["pad_zero"] = bool((out[lens.index(0)] == 0).all())
                        ok = r["rel"] < 2e-3 and r["kv_equal"] and r["rerun_same"] and r["finite"] and r.get(
                            "pad_zero", True)  # fmt: skip
                        r["ok"] = ok
                        worst = max(worst, r["rel"])
                        rows.append(r)
                        if not ok:
                            print("FAIL", r, flush=True)
    # a PDL graph: the shipped row kernel (PDL) then the cluster kernel (PDL, waits on it); replay == eager
    c = _case(1, [512], 16, False, dev, 99)
    graph_ok = []
    for name, kw in cfgs:
        kk, vv = c["k"].clone(), c["v"].clone()
        eager = row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slots"], kk, vv, c["tables"],
                                               c["lens"], 128**-0.5, 32, gdc=0, **kw)  # fmt: skip
        k2, v2 = kk.clone(), vv.clone()

        def seq(k2: torch.Tensor = k2, v2: torch.Tensor = v2, kk: torch.Tensor = kk, vv: torch.Tensor = vv,
                kw: dict = kw) -> torch.Tensor:  # fmt: skip
            decode_row.row_rope_decode(c["qkv"], c["cos"], c["sin"], c["slots"], k2, v2, c["tables"], c["lens"],
                                       128**-0.5, 32)  # fmt: skip
            return row_cluster.row_cluster_decode(c["qkv"], c["cos"], c["sin"], c["slots"], kk, vv, c["tables"],
                                                  c["lens"], 128**-0.5, 32, **kw)  # fmt: skip

        gr = torch.cuda.CUDAGraph()
        with pdl.scope(1):
            seq()  # eager first (the Triton kernel's PDL build compiles outside the capture)
            torch.cuda.synchronize()
            with torch.cuda.graph(gr):
                o = seq()
        o.zero_()
        gr.replay()
        torch.cuda.synchronize()
        graph_ok.append(dict(cfg=name, equal=bool(torch.equal(o, eager))))
        KEEP.append(gr)
    n_ok = sum(r["ok"] for r in rows)
    print(f"check: {n_ok}/{len(rows)} ok, worst rel {worst:.2e}, max |cluster - shipped| "
          f"{max(r['vs_shipped'] or 0 for r in rows):.2e}; PDL graph replay == eager: {graph_ok}", flush=True)
    return dict(rows=rows, ok=n_ok, total=len(rows), worst_rel=worst, graph=graph_ok)


@torch.inference_mode()
def iso(args: argparse.Namespace, dev: torch.device) -> dict:
    """Phase iso (module docstring): variants "row", "row/ctl", "CxW" with optional ":nc" (the same grid without the
    cluster attribute), ":dN" (the kernel's diagnostic bits N: 1 no tile work, 2 no merge; timing ablations whose
    outputs are wrong), ":rN" (__launch_bounds__ minimum blocks N), ":l0" (one K / V register buffer); PDL off and on
    (--iso-pdl)."""
    res = []
    names = args.iso.split(",")
    for b in (int(x) for x in args.iso_batches.split(",")):
        heads, kvh, d, ctx, bs = 32, 32, 128, 512, 16
        per = ctx // bs
        caches = [(torch.randn(b * per, bs, kvh, d, device=dev, dtype=torch.float16),
                   torch.randn(b * per, bs, kvh, d, device=dev, dtype=torch.float16)) for _ in range(32)]  # fmt: skip
        tables = torch.arange(b * per, dtype=torch.int32, device=dev).reshape(b, per)
        lens = torch.full((b,), ctx, dtype=torch.int32, device=dev)
        slots = (tables[:, -1].long() * bs + bs - 1).to(torch.int32)
        qkv = torch.randn(b, (heads + 2 * kvh) * d, device=dev, dtype=torch.float16)
        cos = torch.randn(b, d, device=dev, dtype=torch.float16)
        sin = torch.randn(b, d, device=dev, dtype=torch.float16)
        occ = {}
        for name in names:
            base = name.split("/")[0]
            if base != "row" and ":nc" not in base:
                kw = parse_variant(base)
                occ[name] = row_cluster.max_active_clusters(kw["cluster"], kw["warps"], kvh, b, kw["minb"],
                                                            kw["lookahead"], kw["mbar"])  # fmt: skip
        print(f"batch {b}: max active clusters (needed {kvh * b}): {occ}", flush=True)
        res.append(dict(batch=b, max_active_clusters=occ, needed=kvh * b))
        for mode in (int(m) for m in args.iso_pdl.split(",")):
            graphs, outs = {}, {}
            for name in names:
                base = name.split("/")[0]

                def launches(base: str = base) -> list:
                    if base == "row":
                        return [decode_row.row_rope_decode(qkv, cos, sin, slots, k, v, tables, lens, d**-0.5, heads)
                                for k, v in caches]  # fmt: skip
                    kw = parse_variant(base)
                    return [row_cluster.row_cluster_decode(qkv, cos, sin, slots, k, v, tables, lens, d**-0.5, heads,
                                                           **kw) for k, v in caches]  # fmt: skip

                with pdl.scope(mode):
                    outs[name] = torch.stack(launches())
                    torch.cuda.synchronize()
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        launches()
                graphs[name] = g
                KEEP.append(g)
            per_launch: dict = {n: [] for n in graphs}
            for _ in range(args.iso_rounds):
                for n, g in graphs.items():
                    per_launch[n].append(round(replay_ms(g, args.replays) * 1e3 / 32, 3))
            ref = outs[names[0]].float()
            out = dict(batch=b, pdl=mode, us=per_launch, median_us={n: statistics.median(v) for n, v in per_launch.items()},
                       max_abs_vs_first={n: float((o.float() - ref).abs().max()) for n, o in outs.items()})  # fmt: skip
            print(f"iso batch {b} pdl {mode}: " + " ".join(f"{n} {u:.3f}" for n, u in out["median_us"].items())
                  + f" us | max |diff| vs {names[0]}: {out['max_abs_vs_first']}", flush=True)  # fmt: skip
            res.append(out)
    return dict(iso=res)


def step(args: argparse.Namespace, dev: torch.device) -> dict:
    """Phase step (module docstring): s16_b1's point and pair comparisons with this module's variant hook."""
    import s12_norm
    from bench_decode import copy_bandwidth
    from random_model import SHAPES, make_runner, write_config
    from s14_cfin import compare
    from steps import BLOCK

    s12_norm.variant = variant
    plan = {int(b): f.split(",") for b, f in (x.split("=", 1) for x in args.plan.split(";") if x)}
    # "A>B" (variant names may hold ':'), or "A:B" where neither does
    pairs = [tuple(p.split(">")) if ">" in p else tuple(p.split(":")) for p in args.pairs.split(",") if p]
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    res: dict = dict(copy_GBps=copy_bandwidth(dev) / 1e9, points=[], pairs=[], calls=[])
    for b, variants in plan.items():
        before = dict(CALLS)
        point = s12_norm.point(runner, b, variants, args, res["copy_GBps"] * 1e9)
        res["calls"].append(dict(batch=b, cluster=CALLS["cluster"] - before["cluster"],
                                 fallback=CALLS["fallback"] - before["fallback"]))  # fmt: skip
        print(f"batch {b}: attention calls through the stand-in {res['calls'][-1]}", flush=True)
        res["points"].append(point)
        for a, bb in pairs:
            if a not in variants or bb not in variants:
                continue
            cmp = dict(batch=b, **compare(point, a, bb))
            res["pairs"].append(cmp)
            dd, w = cmp["device_ms"], cmp["wall_ms"]
            (args.out / "s18-cluster-step.json").write_text(json.dumps(res, indent=1))  # (kept if a later batch fails)
            print(f"batch {b} {bb} vs {a}: device {dd['b_median']:.4f} / {dd['a_median']:.4f} ms = "
                  f"{dd['ratio_median']:.4f} (lower in {dd['b_lower']}/{dd['rounds']}; spreads {dd['b_spread']:.4f} / "
                  f"{dd['a_spread']:.4f}) | wall {w['b_median']:.4f} / {w['a_median']:.4f} = {w['ratio_median']:.4f} "
                  f"({w['b_lower']}/{w['rounds']})", flush=True)  # fmt: skip
    variant("none")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=("check", "iso", "step"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--configs", default=",".join(f"{c}x{w}" for c, w in CONFIGS))
    ap.add_argument("--iso", default="row,8x4,4x8,16x2,8x2,4x4,row/ctl")
    ap.add_argument("--iso-batches", default="1")
    ap.add_argument("--iso-rounds", type=int, default=5)
    ap.add_argument("--iso-pdl", default="0,1")
    g, q = "swiglu+cfin+g", "swiglu+cfin+q"
    ap.add_argument("--plan", default=f"1=none,{g},{g}@cl=8x4,{g}@cl=4x8,{g}@cl=16x2,{g}@ctl")
    ap.add_argument("--pairs", default=f"{g}:{g}@cl=8x4,{g}:{g}@cl=4x8,{g}:{g}@cl=16x2,{g}:{g}@ctl,"
                                       f"{q}:{q}@cl=4x4,{q}:{q}@cl=8x2,{q}:{q}@ctl,cfin:cfin@cl=2x4,cfin:cfin@cl=4x2,"
                                       "cfin:cfin@cl=4x4,cfin:cfin@ctl")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    if not row_cluster.available():
        raise SystemExit("row_cluster: not available here (CUDA sm_90 + cuda-python needed)")
    res = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
               torch=torch.__version__, argv=sys.argv)  # fmt: skip
    if args.phase == "check":
        row_cluster._function(torch.cuda.current_device())
        res["compile_s"] = time.time() - t0
        print(f"compiled in {res['compile_s']:.1f} s", flush=True)
        res.update(check(args, dev))
    elif args.phase == "iso":
        res.update(iso(args, dev))
    else:
        res.update(step(args, dev))
    res["wall_s"] = time.time() - t0
    (args.out / f"s18-cluster-{args.phase}.json").write_text(json.dumps(res, indent=1))
    print(f"{args.phase}: wall {res['wall_s']:.0f} s", flush=True)
    if args.phase == "check" and (res["ok"] < res["total"] or not all(g["equal"] for g in res["graph"])):
        raise SystemExit(3)  # the device script skips the timing phases


if __name__ == "__main__":
    main()
