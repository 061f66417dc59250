"""Session 21 (issue 4), the port of "+dn2" with the shuffled formation into main: main's new bucket-1 default
(decode_graphs.FUSION_POLICY: "swiglu+cfin+q+g+dn2", kernels.deferred_norm, "shfl" where its layout was verified)
against the old one ("swiglu+cfin+g"), in the int4 decode step at batch 1 (7B, then 13B), and the 7B engine loop.

Device time (s20_dnorm2.py's protocol, adapted to main): random int4 model (bench/engine/random_model), fp16, 512
cached tokens, decode CUDA graphs with the runner's PDL default, INLAID_QMM_TUNED=1. Every variant's graph is captured
once on ONE runner, then --rounds rounds in which the variants take turns; device ms = event-timed --replays
back-to-back replays of the variant's own graph; per round the ratio to "g". Variants: "new" (policy_fusion(1), AUTO's
fusion, deferred_norm's shipped DN2_FORM "auto"), "thread" (the same name with DN2_FORM "thread": the per-thread
formation, the fallback at unverified layouts), "g" ("swiglu+cfin+g", the old default and the fallback), "ctl" ("g"
captured again: the noise control). Logits of each variant against g's; the gemv_dnorm2 launches at capture (warm-up
+ capture) and their formations (0: "+dn2" fell back).

Engine loop (--loop-rounds > 0; s18_input_loop.py's protocol: the engine's async loop, 7B, --batch 1 request of 512
random tokens, prefix-cached, greedy, ignore_eos; s11_async.one_run: a fresh request a run, --warm steps, then --steps
timed engine.step() calls): the runner's decode fusion set to AUTO (the new default) and to "swiglu+cfin+g" in turn,
each graph captured first, then --loop-rounds rounds (order reversed every other round); ms/step medians and ratios.
The device-time runner is the engine's own runner (its 7B weights are built once).

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s21_dn2_port.py --out DIR
       [--shapes 7b,13b] [--variants new,thread,g,ctl] [--loop-rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from graph_timing import replay_ms  # noqa: E402
from inlaid_worker.kernels import deferred_norm  # noqa: E402
from inlaid_worker.model.decode_graphs import AUTO, policy_fusion  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from steps import BLOCK, make_step  # noqa: E402

G = "swiglu+cfin+g"
FORM_DEFAULT = deferred_norm.DN2_FORM
KEEP: list = []
FORMS: list[str] = []  # the formations of the gemv_dnorm2 launches seen (at capture)


def _count_forms() -> None:
    real = deferred_norm.launch_hgemvr

    def counted(*a, **kw):  # type: ignore[no-untyped-def]
        if kw.get("dnorm2") is not None:
            FORMS.append(kw["dn2_form"])
        return real(*a, **kw)

    deferred_norm.launch_hgemvr = counted


def variant(name: str, b: int) -> str:
    """The fusion of a variant name at batch b, deferred_norm's switch set for it."""
    deferred_norm.DN2_FORM = FORM_DEFAULT
    if name == "new":
        return policy_fusion(b)
    if name == "thread":
        deferred_norm.DN2_FORM = "thread"
        return policy_fusion(b)
    if name in ("g", "ctl"):
        return G
    raise ValueError(name)


@torch.inference_mode()
def point(runner: Any, b: int, args: argparse.Namespace, bw: float, shape: str, variants: str) -> dict:
    c = runner.config
    step = make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    dg = runner._graphs
    graphs, logits, fusions, forms = {}, {}, {}, {}
    for name in variants.split(","):
        fusion = fusions[name] = variant(name, b)
        runner.decode_fusion = fusion
        before = len(FORMS)
        runner.kv_cache.copy_(kv0)
        logits[name] = runner.execute(step).clone()
        key = next(k for k in dg._graphs if k[0] == b and not k[1] and k[3] == fusion)
        graphs[name] = dg._graphs.pop(key)
        KEEP.append(graphs[name])
        forms[name] = {f: FORMS[before:].count(f) for f in sorted(set(FORMS[before:]))}
        print(f"{shape} batch {b} {name}: {fusion} captured, gemv_dnorm2 launches {forms[name]}", flush=True)
    variant("g", b)
    runner.kv_cache.copy_(kv0)
    ref = logits["g"]
    check = {n: dict(max_abs=float((lg - ref).abs().max()), rel=float((lg - ref).norm() / ref.norm()),
                     argmax_same=float((lg.argmax(-1) == ref.argmax(-1)).float().mean()),
                     finite=bool(torch.isfinite(lg).all())) for n, lg in logits.items()}  # fmt: skip
    dev: dict = {n: [] for n in graphs}
    for _ in range(args.rounds):
        for n, g in graphs.items():
            dev[n].append(round(replay_ms(g.graph, args.replays), 5))
    out = dict(shape=shape, batch=b, fusions=fusions, dn2_launches=forms, check=check, rounds_device_ms=dev,
               roofline_ms=(weight_bytes(runner.weights, b) + kv_bytes(c, b * 512, 2)) / bw * 1e3, summary={})  # fmt: skip
    for n in graphs:
        ratios = [y / x for x, y in zip(dev["g"], dev[n], strict=True)]
        diffs = [(y - x) * 1e3 for x, y in zip(dev["g"], dev[n], strict=True)]
        s = dict(median_ms=statistics.median(dev[n]), spread_us=(max(dev[n]) - min(dev[n])) * 1e3,
                 ratio_median=statistics.median(ratios), delta_us=statistics.median(diffs),
                 lower=sum(r < 1 for r in ratios), rounds=len(ratios))  # fmt: skip
        out["summary"][n] = s
        print(f"{shape} batch {b} {n:6s} {fusions[n]:20s} {s['median_ms']:.4f} ms (spread {s['spread_us']:4.1f} us) vs "
              f"g {s['ratio_median']:.4f}x {s['delta_us']:+6.1f} us/step lower {s['lower']}/{s['rounds']} | logits "
              f"max_abs {check[n]['max_abs']:.2e} rel {check[n]['rel']:.1e} argmax {check[n]['argmax_same']:.3f} "
              f"finite {check[n]['finite']}", flush=True)  # fmt: skip
    print(f"{shape} batch {b} roofline {out['roofline_ms']:.4f} ms", flush=True)
    return out


def loop(engine: Any, args: argparse.Namespace, dev: torch.device) -> dict:
    """The engine's async loop at --batch, AUTO and "swiglu+cfin+g" alternating (module docstring)."""
    from s11_async import compare, one_run, warm_cache

    dg = engine.runner._graphs
    vocab = engine.runner.config.vocab_size
    rng = np.random.default_rng(0)
    prompts = [[int(x) for x in rng.integers(3, vocab, 512)] for _ in range(args.batch)]
    warm_cache(engine, prompts)
    modes = (AUTO, G)
    for m in modes:  # each fusion's graph captured (kept in the runner's table under its own key)
        dg.fusion = m
        one_run(engine, prompts, f"cap-{m}", True, args.warm, 4, dev)
    runs: dict = {m: [] for m in modes}
    toks: dict = {m: [] for m in modes}
    for r in range(args.loop_rounds):
        for m in modes if r % 2 == 0 else modes[::-1]:
            dg.fusion = m
            res = one_run(engine, prompts, f"b{args.batch}-r{r}-{m}", True, args.warm, args.steps, dev)
            runs[m].append(round(res["ms_per_step"], 4))
            toks[m].append(res["tokens"])
    ratios = [y / x for x, y in zip(runs[G], runs[AUTO], strict=True)]
    out = dict(batch=args.batch, fusions={AUTO: policy_fusion(args.batch), G: G}, runs=runs,
               ms_per_step={m: statistics.median(v) for m, v in runs.items()},
               ratio=dict(per_round=[round(x, 5) for x in ratios], median=statistics.median(ratios),
                          lower=sum(x < 1 for x in ratios), rounds=len(ratios)),
               tokens_vs_g=[compare(a, b) for a, b in zip(toks[G], toks[AUTO], strict=True)],
               tokens_g_vs_own_first=[compare(toks[G][0], b) for b in toks[G]])  # fmt: skip
    print(f"engine loop batch {args.batch}: auto ({policy_fusion(args.batch)}) {out['ms_per_step'][AUTO]:.4f} ms/step "
          f"(rounds {runs[AUTO]}), {G} {out['ms_per_step'][G]:.4f} (rounds {runs[G]}); auto / g "
          f"{out['ratio']['median']:.4f} lower {out['ratio']['lower']}/{out['ratio']['rounds']}; token streams equal "
          f"in {sum(c['equal'] for c in out['tokens_vs_g'])}/{len(ratios)} rounds", flush=True)  # fmt: skip
    dg.fusion = AUTO
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shapes", default="7b,13b")
    ap.add_argument("--variants", default="new,thread,g,ctl")
    ap.add_argument("--variants13", default="new,g,ctl")  # (the 13B's: the per-thread formation measured on the 7B)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--loop-rounds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--tag", default="s21-dn2-port")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    _count_forms()
    bw = copy_bandwidth(dev)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, triton=triton.__version__, copy_GBps=bw / 1e9, argv=sys.argv,
                     policy_b1=policy_fusion(1), dn2_form_default=FORM_DEFAULT,
                     dn2_maxnreg=deferred_norm.DN2_MAXNREG, points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    for shape in args.shapes.split(","):
        cfg_dir = write_config(SHAPES[shape], Path(tempfile.mkdtemp()) / shape)
        engine = None
        if shape == "7b" and args.loop_rounds > 0:  # the engine's runner serves the device-time A/B too
            from host_overhead import word_tokenizer
            from inlaid_worker.engine.engine import EngineLimits, LLMEngine
            from inlaid_worker.engine.tokenizer import PromptTokenizer

            runner = make_runner(cfg_dir, "int4", dev, torch.float16, 2048, BLOCK, 4, "triton", True)
            engine = LLMEngine(runner, PromptTokenizer(word_tokenizer(runner.config.vocab_size)),
                               EngineLimits(BLOCK, 2048, 4, 2048, 4096, 0, True), base_model_id="base",
                               eos_token_ids=set())  # fmt: skip
            engine.greedy_copy = 2  # the shipped greedy path (async_step.GREEDY_COPY)
        else:
            runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
        print(f"{shape}: setup {time.time() - t0:.0f} s, copy {bw / 1e9:.0f} GB/s", flush=True)
        res["points"].append(point(runner, 1, args, bw, shape, args.variants13 if shape == "13b" else args.variants))
        path.write_text(json.dumps(res, indent=1))
        if engine is not None:
            res["loop"] = loop(engine, args, dev)
            path.write_text(json.dumps(res, indent=1))
        print(f"t {time.time() - t0:.0f} s", flush=True)
        del runner, engine
        KEEP.clear()
        torch.cuda.empty_cache()
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
