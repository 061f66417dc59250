"""CPU sweep of quantization methods and MLGPTQ Hessian aggregations on the answer-NLL proxy (nll.py).

    PYTHONPATH=workers .venv/bin/python bench/quality/agg_sweep.py \
        --configs fp,rtn:4:64,pooled:4:64,max:4:64,diagmax:3:64,max:3:64:0.1,task:4:64 --out sweep.json

A config is `how:bits:group[:percdamp]`; `how` is fp, rtn, pooled (GPTQ-tweaked: Hessians of each task's
calibration data without adapters, token-weighted), task (per-task GPTQ, each task evaluated on its own
quantization) or any MLGPTQ aggregation of inlaid_worker.quant.aggregate (per-task Hessians with the
task's adapter active). Per-task Hessians are collected once on the full-precision model exactly as
`quantize_checkpoint` does (same functions) and cached; weights are fake-quantized in memory with the same
GPTQ/RTN cores the checkpoint writer packs (the packing round trip is covered by the quant tests). Each
task is scored with its adapter merged (W_hat + scaling * B A on every adapted linear).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from inlaid_worker.quant.adapter import load_task_adapter
from inlaid_worker.quant.aggregate import aggregate
from inlaid_worker.quant.gptq import gptq_quantize, prepare_hessian
from inlaid_worker.quant.hessian import GROUPS, MODULE_GROUP, decoder_layers, open_stream, step_layer
from inlaid_worker.quant.rtn import rtn_quantize
from inlaid_worker.quant.spec import QuantSpec
from inlaid_worker.tasks.example import load_split
from nll import answer_nll, encode

ADAPTERS = REPO / "assets" / "adapters"
Key = tuple[int, str]  # (layer, "self_attn.q_proj")
Hs = list[dict[str, torch.Tensor]]  # per layer: group -> H
ASYM = "--asym" in sys.argv  # run.py quantizes with the default symmetric grid


def collect(model, tok, tasks: list[str], n: int, seed: int, model_dir: Path) -> dict:
    """{"ad": {task: Hs}, "off": {task: Hs}, "tokens": {task: n_t}}, all layers, full-precision streams."""
    from run import calibration_seqs

    streams = []
    for t in tasks:
        seqs = calibration_seqs(tok, t, n, seed)
        ad = load_task_adapter(ADAPTERS / t, model_dir, t)
        streams += [("ad", open_stream(model, t, ad, seqs, torch.device("cpu")))]
        streams += [("off", open_stream(model, t, None, seqs, torch.device("cpu")))]
    out: dict = {"ad": {t: [] for t in tasks}, "off": {t: [] for t in tasks}}
    for idx, layer in enumerate(decoder_layers(model)):
        for kind, s in streams:
            out[kind][s.name].append(step_layer(layer, idx, s))
        print(f"hessians layer {idx}", flush=True)
    out["tokens"] = {s.name: s.tokens for kind, s in streams if kind == "ad"}
    return out


def quantize(model, hs: Hs | None, spec: QuantSpec) -> tuple[dict[Key, torch.Tensor], float]:
    """Fake-quantized weights of every linear; the largest damping GPTQ had to use."""
    out: dict[Key, torch.Tensor] = {}
    worst = 0.0
    for idx, layer in enumerate(decoder_layers(model)):
        prepared = {g: prepare_hessian(hs[idx][g], spec) for g in GROUPS} if hs is not None else {}
        worst = max([worst] + [p.percdamp for p in prepared.values()])
        for path, group in MODULE_GROUP.items():
            w = layer.get_submodule(path).weight.detach()
            q = rtn_quantize(w, spec) if hs is None else gptq_quantize(w, prepared[group], spec)
            out[(idx, path)] = q.dequant
    return out, worst


def merged_deltas(model_dir: Path, task: str) -> dict[Key, torch.Tensor]:
    ad = load_task_adapter(ADAPTERS / task, model_dir, task)
    return {(l, p): d.scaling * (d.b @ d.a) for l, ds in ad.deltas.items() for p, d in ds.items()}


def evaluate(model, weights: dict[Key, torch.Tensor] | None, tasks, deltas, encoded) -> dict[str, float]:
    layers = decoder_layers(model)
    orig = {(l, p): layers[l].get_submodule(p).weight.detach().clone() for l in range(len(layers)) for p in MODULE_GROUP}
    base = weights if weights is not None else orig
    res = {}
    try:
        for t in tasks:
            for key, w in base.items():
                d = deltas[t].get(key)
                layers[key[0]].get_submodule(key[1]).weight.data.copy_(w if d is None else w + d)
            res[t] = answer_nll(model, encoded[t])
    finally:
        for (l, p), w in orig.items():
            layers[l].get_submodule(p).weight.data.copy_(w)
    return res


def layer_err(model, weights: dict[Key, torch.Tensor], H: dict, tasks) -> dict[str, float]:
    """Per task: mean over linears of tr(dW H_t dW^T) / tr(W H_t W^T), H_t with the task's adapter active
    (GPTQ's own objective, measured with each task's true Hessian)."""
    layers = decoder_layers(model)
    out = {}
    for t in tasks:
        rel = []
        for (l, p), wq in weights.items():
            w = layers[l].get_submodule(p).weight.detach()
            h = H["ad"][t][l][MODULE_GROUP[p]]
            dw = wq - w
            rel.append(float(((dw @ h) * dw).sum() / ((w @ h) * w).sum()))
        out[t] = sum(rel) / len(rel)
    return out


def run_config(cfg: str, model, H: dict, tasks, deltas, encoded) -> dict:
    how, *rest = cfg.split(":")
    if how == "fp":
        return {"nll": evaluate(model, None, tasks, deltas, encoded)}
    bits, group = int(rest[0]), int(rest[1])
    spec = QuantSpec(bits=bits, group_size=group, sym=not ASYM, **({"percdamp": float(rest[2])} if len(rest) > 2 else {}))
    layers = range(len(decoder_layers(model)))
    if how == "rtn":
        w, damp = quantize(model, None, spec)
        return {"nll": evaluate(model, w, tasks, deltas, encoded), "lerr": layer_err(model, w, H, tasks)}
    if how == "task":
        nll, lerr, damp = {}, {}, 0.0
        for t in tasks:
            w, d = quantize(model, H["ad"][t], spec)
            nll.update(evaluate(model, w, [t], deltas, encoded))
            lerr.update(layer_err(model, w, H, [t]))
            damp = max(damp, d)
        return {"nll": nll, "lerr": lerr, "damp": damp}
    kind, agg = ("off", "pooled") if how == "pooled" else ("ad", how)
    hs = [{g: aggregate(agg, {t: H[kind][t][i][g] for t in tasks}, H["tokens"]) for g in GROUPS} for i in layers]
    w, damp = quantize(model, hs, spec)
    return {"nll": evaluate(model, w, tasks, deltas, encoded), "lerr": layer_err(model, w, H, tasks), "damp": damp}


def report(results: dict, tasks: list[str]) -> str:
    """Markdown: per-task answer NLL, mean NLL increase over fp (nats), mean layer error (GPTQ objective)."""
    fp = results["fp"]["nll"]
    head = "| config | " + " | ".join(tasks) + " | mean dNLL | mean layer err |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    for cfg, r in results.items():
        if set(tasks) - set(r["nll"]):
            continue
        dnll = sum(r["nll"][t] - fp[t] for t in tasks) / len(tasks)
        lerr = f"{sum(r['lerr'][t] for t in tasks) / len(tasks):.4f}" if "lerr" in r else "-"
        cells = " | ".join(f"{r['nll'][t]:.3f}" for t in tasks)
        lines.append(f"| {cfg} | {cells} | {dnll:+.3f} | {lerr} |")
    return "\n".join(lines)


def main() -> None:
    from inlaid_worker.model.smollm2 import ensure_smollm2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--tasks", default="boolq,csqa,nq_open,asdiv")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/inlaid-nll"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--asym", action="store_true", help="asymmetric grids (default: symmetric, as run.py)")
    ap.add_argument("--report", action="store_true", help="print the markdown table of --out and stop")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = args.tasks.split(",")
    if args.report:
        print(report(json.loads(args.out.read_text()), tasks))
        return
    model_dir = Path(ensure_smollm2())
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cache = args.cache / f"H-{'_'.join(tasks)}-n{args.calib_n}-s{args.seed}.pt"
    if cache.is_file():
        H = torch.load(cache)
    else:
        H = collect(model, tok, tasks, args.calib_n, args.seed, model_dir)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(H, cache)
    deltas = {t: merged_deltas(model_dir, t) for t in tasks}
    encoded = {t: encode(tok, load_split(t, "test")[: args.limit]) for t in tasks}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for cfg in args.configs.split(","):
        if cfg in results:
            continue
        t0 = time.time()
        results[cfg] = run_config(cfg, model, H, tasks, deltas, encoded) | {"seconds": round(time.time() - t0, 1)}
        print(cfg, json.dumps(results[cfg]), flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
