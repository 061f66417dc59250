"""Session 11 (issue 4): paged_decode's impl "row" (kernels.decode_row: 16-32-token tiles, CUDA-core products for the
query rows, a fixed partitioning of ~8 programs an SM, the merge by the last partition to arrive) against the shipped
attention (impl "tiles", autotuned, SKIP_EMPTY at buckets 1-2), per layer and in the 7B int4 decode step.
Stages (--stages picks):
  matrix: batch 1 / 2 / 4 x contexts --contexts (Llama-2-7B attention: 32 x 128, fp16, block 16, each layer its own
          cache, enough layers to spill L2); per variant: attn_off (attention alone, CUDA graph, PDL off), attn_on
          (same, PDL mode 1), step_on (rope_cache + attention, PDL mode 1, the new token's slots clobbered before
          the replay that gives pdl_err), kernel_us (torch.profiler, PDL off); errors against the fp32 reference;
  pick:   per batch the row config with the least mean step_on ratio to "old" over the contexts;
  step:   runner.execute of the 7B int4 step (random g128 weights), per --step-plan ("batch@context" items: "old"
          (tiles, as HEAD shipped it) and the picked row configs (row = pick, row2 = runner-up); or
          "batch@context:old,NAME,...": NAME a ROW_CFGS entry or "table" (paged_decode.ROW_TABLE, the shipped
          default)), alternating round by round on ONE runner, each with its own decode graphs; wall time and
          device time (back-to-back graph replays);
  sass:   offline sm_90 builds (no GPU): registers, shared memory, static SASS instructions of the row configs.
A ROW_CFGS entry with rope=1 (row16w1-la-rope) is decode_row.row_rope_decode (rotary and the new token's K/V write
inside "row"): in the matrix it replaces rope_cache + attention (attn_* and step_on time that one launch); in the step
the runner takes it through llama_fast's dispatch (paged_decode.row_rope_for). s11_attn2.sh: the follow-up run.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels:bench/engine python3 bench/kernels/s11_attn.py
  --out DIR [--stages matrix,pick,step]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import bench_decode_attn as bda  # noqa: E402
from inlaid_worker.kernels import paged_decode as pd  # noqa: E402
from inlaid_worker.kernels.decode_row import row_rope_decode  # noqa: E402
from inlaid_worker.kernels.rope_cache import rope_and_cache  # noqa: E402

# row configs (decode_row.ROW_DEFAULTS overrides)
ROW_CFGS: dict[str, dict[str, int]] = {  # lookahead pinned: what each name meant when measured
    # call 1 (4 and 2 warps a program were slower than 1 everywhere)
    "row16w4": dict(num_warps=4, lookahead=0), "row16w4-la": dict(num_warps=4, lookahead=1),
    "row16w4-s4": dict(num_warps=4, per_sm=4, lookahead=0), "row16w2": dict(num_warps=2, lookahead=0),
    "row32w4-s4": dict(block_n=32, num_warps=4, per_sm=4, maxnreg=128, lookahead=0),
    "row16w1": dict(num_warps=1, lookahead=0), "row16w4-nopre": dict(num_warps=4, prefetch=0, lookahead=0),
    # calls 2-3: one warp a program
    "row16w1-la": dict(num_warps=1, lookahead=1), "row8w1": dict(block_n=8, num_warps=1, lookahead=0),
    "row8w1-la": dict(block_n=8, num_warps=1, lookahead=1),
    "row8w1-s16": dict(block_n=8, num_warps=1, per_sm=16, lookahead=0),
    # s11-attn2: rotary and the new token's K/V write inside "row" (decode_row.row_rope_decode; in the step through
    # llama_fast's dispatch, paged_decode.row_rope_for)
    "row16w1-la-rope": dict(num_warps=1, lookahead=1, rope=1)}  # fmt: skip
# the matrix at batch 2 and 4 (batch 1: every config of --matrix-variants)
WIDE = ("old", "row16w1", "row16w1-la", "row8w1", "row8w1-la", "row8w1-s16", "row16w2", "row32w4-s4", "row16w4",
        "row16w4-la", "row16w4-s4", "row16w1-la-rope")  # fmt: skip


def variants(keep: list[str]) -> list[tuple[str, dict]]:
    out = [("old", dict(impl="tiles"))] + [(n, dict(impl="row", **o)) for n, o in ROW_CFGS.items()]
    return [v for v in out if not keep or v[0] in keep]


def point(b: int, ctx: int, layers: int, dev: torch.device, todo: list[tuple[str, dict]]) -> list[dict]:
    """bench_decode_attn.point's graphs for `todo`, plus attn_on and kernel_us for every variant."""
    from inlaid_worker.model.rope import cos_sin

    g = torch.Generator(device=dev).manual_seed(b * 100003 + ctx)
    per_seq = -(-ctx // bda.BLOCK)
    nblk = b * per_seq
    kv = torch.empty(layers, 2, nblk, bda.BLOCK, bda.KV_HEADS, bda.D, device=dev, dtype=torch.float16)
    kv.normal_(0, 1, generator=g)
    tables = torch.randperm(nblk, device=dev, generator=g).to(torch.int32).reshape(b, per_seq)
    lens = torch.full((b,), ctx, device=dev, dtype=torch.int32)
    slots = (tables[:, (ctx - 1) // bda.BLOCK].long() * bda.BLOCK + (ctx - 1) % bda.BLOCK).to(torch.int32)
    qkv = torch.randn(b, (bda.HEADS + 2 * bda.KV_HEADS) * bda.D, device=dev, generator=g).half()
    q0 = torch.randn(b, bda.HEADS, bda.D, device=dev, generator=g).half()
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, bda.D, 2, device=dev, dtype=torch.float32) / bda.D))
    cos, sin = cos_sin(inv_freq, lens - 1, torch.float16)
    scale = bda.D**-0.5
    rows = []
    for name, kw in todo:
        fused = bool(kw.get("rope"))  # rope_cache + "row" as one launch: attn = step = that launch
        opts = {k: v for k, v in kw.items() if k != "impl"}
        q_rot = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, kv[0, 0], kv[0, 1], bda.HEADS) if fused else q0

        def fused_layers() -> list[torch.Tensor]:
            return [row_rope_decode(qkv, cos[:, 0], sin[:, 0], slots, kv[i, 0], kv[i, 1], tables, lens, scale,
                                    bda.HEADS, **opts) for i in range(layers)]  # noqa: B023  # fmt: skip

        def attn() -> list[torch.Tensor]:
            if fused:  # noqa: B023
                return fused_layers()
            return [pd.paged_decode(q0, kv[i, 0], kv[i, 1], tables, lens, scale, **kw) for i in range(layers)]  # noqa: B023

        qs: list[torch.Tensor] = []

        def step() -> list[torch.Tensor]:
            if fused:  # noqa: B023
                qs[:] = [q_rot] * layers  # noqa: B023
                return fused_layers()
            outs = []
            qs.clear()
            for i in range(layers):
                q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, kv[i, 0], kv[i, 1], bda.HEADS)
                qs.append(q)
                outs.append(pd.paged_decode(q, kv[i, 0], kv[i, 1], tables, lens, scale, **kw))  # noqa: B023
            return outs

        def clobber() -> None:
            kv[:, 0].view(layers, -1, bda.KV_HEADS, bda.D)[:, slots.long()] = 30.0

        row: dict = dict(batch=b, context=ctx, variant=name, layers=layers, opts={k: v for k, v in kw.items()})
        try:
            t0 = time.time()
            out = attn()[0]
            ref = pd.paged_decode_reference(q_rot, kv[0, 0], kv[0, 1], tables, lens, scale).float()
            row["rel_err"] = float((out.float() - ref).norm() / ref.norm())
            row["attn_off_us"], _ = bda.graph_us(attn, layers, 0)
            row["attn_on_us"], _ = bda.graph_us(attn, layers, 1)
            row["step_on_us"], outs = bda.graph_us(step, layers, 1, clobber)
            last = layers - 1
            ref = pd.paged_decode_reference(qs[last], kv[last, 0], kv[last, 1], tables, lens, scale).float()
            row["pdl_err"] = float((outs[last].float() - ref).norm() / ref.norm())
            row["kernel_us"] = bda.kernel_us(attn, layers)
            row["tuned_pick"] = str(getattr(pd._decode_tuned, "best_config", None)) if name == "old" else ""
            row["wall_s"] = round(time.time() - t0, 1)
        except Exception as exc:  # one failing variant must not void the others
            row["error"] = repr(exc)[:400]
        rows.append(row)
        print(json.dumps(row), flush=True)
    del kv
    torch.cuda.empty_cache()
    return rows


def matrix(args, res: dict, dev: torch.device) -> None:  # type: ignore[no-untyped-def]
    pd.ROW = 0
    rows = res.setdefault("matrix", [])
    for b in args.batches:
        todo = [v for v in variants(args.matrix_variants) if b == 1 or v[0] in WIDE]
        for ctx in args.contexts if b == 1 else [c for c in args.contexts if c > 1]:
            layer_mb = b * ctx * 2 * bda.KV_HEADS * bda.D * 2 / 1e6
            layers = int(min(32, max(4, -(-200 // layer_mb))))
            rows += point(b, ctx, layers, dev, todo)
            (args.out / "s11-attn.json").write_text(json.dumps(res, indent=1))
    pd.ROW = None
    print("| batch | ctx | variant | attn_off us | attn_on us | step_on us | kernel us (sum) | err | pdl_err |")
    for r in rows:
        ku = r.get("kernel_us", {})
        print(f"| {r['batch']} | {r['context']} | {r['variant']} | {r.get('attn_off_us', 0):.2f} | "
              f"{r.get('attn_on_us', 0):.2f} | {r.get('step_on_us', 0):.2f} | {sum(ku.values()):.2f} | "
              f"{r.get('rel_err', -1):.1e} | {r.get('pdl_err', -1):.1e} {r.get('error', '')}", flush=True)  # fmt: skip


def pick(args, res: dict, dev: torch.device) -> None:  # type: ignore[no-untyped-def]
    """Per batch: the row configs by mean step_on ratio to "old" over the contexts (correct rows only)."""
    rows = res.get("matrix", [])
    picks: dict[str, list] = {}
    for b in args.batches:
        old = {r["context"]: r["step_on_us"] for r in rows if r["batch"] == b and r["variant"] == "old"
               and "step_on_us" in r}  # fmt: skip
        score: dict[str, list[float]] = {}
        for r in rows:
            if r["batch"] != b or r["variant"] == "old" or "step_on_us" not in r or r["context"] not in old:
                continue
            if r["rel_err"] > 5e-3 or r["pdl_err"] > 5e-3:
                continue
            score.setdefault(r["variant"], []).append(r["step_on_us"] / old[r["context"]])
        ranked = sorted((statistics.mean(v), n) for n, v in score.items() if len(v) == len(old) and old)
        picks[str(b)] = [(n, round(s, 4)) for s, n in ranked]
        print(f"batch {b}: row configs by mean step_on ratio to old: {picks[str(b)]}", flush=True)
    res["picks"] = picks


def step(args, res: dict, dev: torch.device) -> None:  # type: ignore[no-untyped-def]
    from bench_decode import copy_bandwidth
    from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config
    from s9b_profile import replay_ms
    from steps import BLOCK, make_step, timed_all

    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    c = runner.config
    bw = copy_bandwidth(dev)
    res["copy_GBps"] = bw / 1e9
    picks = res.get("picks", {})
    dg_sets: dict = {}
    rows = res.setdefault("step", [])
    for item in args.step_plan.split(";"):  # "batch@context[:variant,...]"
        head, _, names = item.partition(":")
        b, ctx = (int(v) for v in head.split("@"))
        if names:  # old, table (paged_decode.ROW_TABLE: the shipped default), or ROW_CFGS names
            cfgs = {n: None if n == "old" else n for n in names.split(",")}
        else:  # old and the matrix's picks
            ranked = [n for n, _ in picks.get(str(b), [])]
            if not ranked:
                print(f"batch {b}: no row config picked (matrix rows missing); skipped", flush=True)
                continue
            cfgs = {"old": None, "row": ranked[0], **({"row2": ranked[1]} if len(ranked) > 1 and args.row2 else {})}
        st = make_step(b, 1, ctx, [-1] * b, c.vocab_size, runner.num_kv_blocks)
        nbytes = weight_bytes(runner.weights, b) + kv_bytes(c, b * ctx, 2)
        wall: dict = {v: [] for v in cfgs}
        rmed: dict = {v: [] for v in cfgs}
        dev_ms: dict = {v: [] for v in cfgs}
        for _ in range(args.rounds):
            for v, cfg in cfgs.items():
                pd.ROW = None if cfg == "table" else int(cfg is not None)
                os.environ["INLAID_DECODE_ROW_OPTS"] = ",".join(
                    f"{k}={x}" for k, x in ROW_CFGS.get(cfg or "", {}).items()
                )
                key_v = f"{v}:{cfg}"
                if runner._graphs is not None:
                    runner._graphs._graphs = dg_sets.setdefault(key_v, {})
                t = timed_all(lambda: runner.execute(st), dev, 2, args.reps)  # noqa: B023
                dg = runner._graphs
                dg_sets[key_v] = dg._graphs
                wall[v] += t
                rmed[v].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
                key = min((k for k in dg._graphs if k[0] >= b), key=lambda k: k[0])
                dev_ms[v].append(round(replay_ms(dg._graphs[key].graph, args.replays), 4))
        for v, cfg in cfgs.items():
            rows.append(dict(batch=b, context=ctx, variant=v, config=cfg, step_ms=statistics.median(wall[v]) * 1e3,
                             device_ms=statistics.median(dev_ms[v]), roofline_ms=nbytes / bw * 1e3,
                             round_ms=rmed[v], round_device_ms=dev_ms[v]))  # fmt: skip
            o = next(r for r in rows[::-1] if r["variant"] == "old" and r["batch"] == b and r["context"] == ctx)
            n = rows[-1]
            wins = sum(x < y for x, y in zip(rmed[v], rmed["old"], strict=True))
            dwins = sum(x < y for x, y in zip(dev_ms[v], dev_ms["old"], strict=True))
            print(f"| {b} | {ctx} | {v} {cfg or ''} | {n['step_ms']:.3f} | {n['step_ms'] / o['step_ms']:.3f} | "
                  f"{wins}/{args.rounds} | {n['device_ms']:.4f} | {n['device_ms'] / o['device_ms']:.3f} | "
                  f"{dwins}/{args.rounds} | {n['roofline_ms']:.3f} |", flush=True)  # fmt: skip
        (args.out / "s11-attn.json").write_text(json.dumps(res, indent=1))
    pd.ROW = None
    os.environ.pop("INLAID_DECODE_ROW_OPTS", None)


def sass(args, res: dict, dev: torch.device | None) -> None:  # type: ignore[no-untyped-def]
    """Offline sm_90 builds of the row configs at batch 1 (7B: 32 x 128 MHA, block 16, PDL mode 1)."""
    import re
    import subprocess

    import triton
    from inlaid_worker.kernels import decode_row
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = decode_row._row_kernel
    ptrs = {a: "*fp16" for a in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")}
    ptrs.update(bt_ptr="*i32", ctx_ptr="*i32", pm_ptr="*fp32", pl_ptr="*fp32", pacc_ptr="*fp32", cnt_ptr="*i32",
                cos_ptr="*fp16", sin_ptr="*fp16", slot_ptr="*i32")  # fmt: skip
    aligned = [a for a in fn.arg_names if a.startswith("stride_") and a != "stride_bt"]
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out = {}
    for name, opts in ROW_CFGS.items():
        o = {**decode_row.ROW_DEFAULTS, **opts}
        parts = decode_row.row_parts(1, 32, 132, o["per_sm"])
        consts = dict(HEADS=32, KV_HEADS=32, REP=1, REP_PAD=1, HEAD_DIM=128, D_PAD=128, BLOCK_SIZE=16,
                      NUM_PARTS=parts, BLOCK_N=o["block_n"], MERGE_CHUNK=min(parts, 8), PREFETCH=o["prefetch"],
                      LOOKAHEAD=o["lookahead"], ROPE=o["rope"], USE_GDC=1)  # fmt: skip
        sig = {a: "constexpr" if a in consts else ptrs.get(a, "fp32" if a == "scale" else "i32") for a in fn.arg_names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in ptrs or a in aligned}
        ck = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=o["num_warps"], num_stages=1,
                                         **({"maxnreg": o["maxnreg"]} if o["maxnreg"] else {})))  # fmt: skip
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(ck.asm["cubin"])
            f.flush()
            usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
            code = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
        regs = int(re.search(r"REG:(\d+)", usage).group(1))
        out[name] = dict(parts=parts, regs=regs, stack=int(re.search(r"STACK:(\d+)", usage).group(1)),
                         shared=int(re.search(r"SHARED:(\d+)", usage).group(1)),
                         sass_instructions=len(re.findall(r"/\*[0-9a-f]{4}\*/\s+[^;]+;", code)),
                         blocks_per_sm_by_regs=65536 // (max(regs, 1) * 32 * o["num_warps"]))  # fmt: skip
        print(name, out[name], flush=True)
    res["sass"] = out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", default="matrix,pick,step")
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--contexts", default="1,64,512,2048")
    ap.add_argument("--matrix-variants", default="", help="comma list (default: old and every ROW_CFGS entry)")
    ap.add_argument("--step-plan", default="1@512;2@512;4@512;1@2048")
    ap.add_argument("--row2", type=int, default=1, help="also the runner-up row config in the step")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--replays", type=int, default=10)
    args = ap.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.contexts = [int(x) for x in args.contexts.split(",")]
    args.matrix_variants = [v for v in args.matrix_variants.split(",") if v]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "s11-attn.json"
    res: dict = json.loads(path.read_text()) if path.exists() else {}
    res.setdefault("date", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda") if cuda else None
    res.update(device=torch.cuda.get_device_name() if cuda else "cpu (offline builds)", torch=torch.__version__)
    res.setdefault("commands", []).append(" ".join(sys.argv))
    t0 = time.time()
    for stage in args.stages.split(","):
        t = time.time()
        {"matrix": matrix, "pick": pick, "step": step, "sass": sass}[stage](args, res, dev)
        res[f"{stage}_s"] = round(time.time() - t, 1)
        path.write_text(json.dumps(res, indent=1))
        print(f"stage {stage}: {res[f'{stage}_s']} s", flush=True)
    print(f"wall {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
