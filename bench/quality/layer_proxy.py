"""CPU proxy: is act-order an MLGPTQ gain or a GPTQ gain? Layer error of GPTQ-tweaked and MLGPTQ, each
without act-order, with act-order (desc_act) and with act-order and static groups (-ao-static, the layout
the serving kernels read), under every task's own (adapter-on) Hessian.

    PYTHONPATH=workers python bench/quality/layer_proxy.py --tasks boolq,csqa,nq_open,asdiv --calib-n 16 \
        --out bench/results/quality-2026-11-29-layer-proxy.json

Error of a config for task t = sum over layers and linears of tr(dW H_t dW^T) / tr(W H_t W^T) / count
(GPTQ's objective, relative), H_t from a held-out half of the task's calibration split (seed 1 draws
the quantization half, the other sequences evaluate), so a method is not scored on its own data.
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

from batch_hessians import collect_sums, finalize, merged  # noqa: E402
from fast_gptq import aggregate_batched, gptq_batched, rtn_batched  # noqa: E402
from multi_llama import from_hf  # noqa: E402

GROUPS = ("qkv", "o", "gate_up", "down")


def rel_err(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    """mean over layers of tr(dW H dW^T) / tr(W H W^T); w, q [L, N, K], h [L, K, K]."""
    d = w - q
    num = torch.einsum("lnk,lkj,lnj->l", d, h, d)
    den = torch.einsum("lnk,lkj,lnj->l", w, h, w)
    return float((num / den).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", default="boolq,csqa,nq_open,asdiv")
    ap.add_argument("--calib-n", type=int, default=16)
    ap.add_argument("--bits", default="4,3")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from inlaid_worker.model.smollm2 import ensure_smollm2
    from inlaid_worker.quant.adapter import load_task_adapter
    from run import ADAPTERS, calibration_seqs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    md = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(md)
    model = AutoModelForCausalLM.from_pretrained(md, dtype=torch.float32).eval()
    _, base = from_hf(model)
    tasks = a.tasks.split(",")
    per_task, held, pooled, n_pool = {}, {}, {}, 0
    for t in tasks:
        seqs = calibration_seqs(tok, t, None, 1)
        fit, ev = seqs[: a.calib_n], seqs[a.calib_n : 2 * a.calib_n]
        sums, n = collect_sums(model, fit, "cpu", batch=4)
        for g, s in sums.items():
            pooled[g] = pooled[g] + s if g in pooled else s
        n_pool += n
        with merged(model, load_task_adapter(ADAPTERS / t, md, t)):
            sums, n = collect_sums(model, fit, "cpu", batch=4)
            per_task[t] = {g: finalize(s, n) for g, s in sums.items()}
            sums, n = collect_sums(model, ev, "cpu", batch=4)
            held[t] = {g: finalize(s, n) for g, s in sums.items()}
        print(f"[{t}] hessians at {time.time() - t0:.0f}s", flush=True)
    hs = {
        "gptq": {g: finalize(s, n_pool) for g, s in pooled.items()},
        "mlgptq": {g: aggregate_batched("diagmax", torch.stack([per_task[t][g] for t in tasks])) for g in GROUPS},
    }
    res: dict = {"tasks": tasks, "calib_n": a.calib_n, "group_size": a.group_size, "errors": {}}
    for bits in [int(b) for b in a.bits.split(",")]:
        cfgs = {"rtn": {g: rtn_batched(base[g], bits, a.group_size) for g in GROUPS}}
        for name, h in hs.items():
            for suffix, ao, static in (("", False, False), ("-ao", True, False), ("-ao-static", True, True)):
                cfgs[f"{name}{suffix}"] = {
                    g: gptq_batched(base[g], h[g], bits, a.group_size, act_order=ao, static_groups=static)[0]
                    for g in GROUPS
                }
        for name, q in cfgs.items():
            errs = {t: sum(rel_err(base[g], q[g], held[t][g]) for g in GROUPS) / len(GROUPS) for t in tasks}
            res["errors"][f"{name} {bits}-bit"] = {"mean": sum(errs.values()) / len(errs), "tasks": errs}
            print(f"{bits}-bit {name}: mean rel. layer error {res['errors'][f'{name} {bits}-bit']['mean']:.5f}",
                  flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
