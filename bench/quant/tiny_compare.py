"""Tiny experiment: logit error of each task's adapter on RTN / GPTQ-tweaked / MLGPTQ / per-task GPTQ bases.

A sanity check of the pipeline on a random tiny Llama (no real tasks: the quality table comes later).
Run: .venv/bin/python bench/quant/tiny_compare.py  (CPU, ~30 s)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests"))
from factories import make_random_adapter, make_tiny_llama  # noqa: E402
from inlaid_worker.quant import QuantSpec, TaskData, load_dequantized_model, quantize_checkpoint  # noqa: E402


def logit_mse(base: torch.nn.Module, adapter: Path, seqs: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        errs = [((model(input_ids=s.view(1, -1)).logits[0] - r) ** 2).mean() for s, r in zip(seqs, ref)]
    return float(torch.stack(errs).mean())


def main() -> None:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    base = make_tiny_llama(root / "base", layers=2, hidden=128, intermediate=256)
    g = torch.Generator().manual_seed(0)
    names = ["t0", "t1"]
    adapters = {n: make_random_adapter(root / n, base, rank=8, alpha=16, seed=i, init_std=0.2,
                                       targets=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
                for i, n in enumerate(names)}
    calib = {n: [torch.randint(3, 320, (64,), generator=g) for _ in range(8)] for n in names}
    test = {n: [torch.randint(3, 320, (64,), generator=g) for _ in range(4)] for n in names}
    ref = {n: [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapters[n]))
               (input_ids=s.view(1, -1)).logits[0].detach() for s in test[n]] for n in names}
    spec = QuantSpec(bits=3, group_size=32, act_order=True, static_groups=True)
    rows: dict[str, dict[str, float]] = {}
    for method in ("rtn", "gptq", "mlgptq"):
        tasks = [TaskData(n, adapters[n] if method == "mlgptq" else None, calib[n]) for n in names]
        out = quantize_checkpoint(base, root / method, method, spec, [] if method == "rtn" else tasks).out_dir
        rows[method] = {n: logit_mse(load_dequantized_model(out), adapters[n], test[n], ref[n]) for n in names}
    rows["gptq-task"] = {}
    for n in names:
        out = quantize_checkpoint(base, root / f"task-{n}", "gptq-task", spec, [TaskData(n, adapters[n], calib[n])])
        rows["gptq-task"][n] = logit_mse(load_dequantized_model(out.out_dir), adapters[n], test[n], ref[n])
    print("logit MSE vs full-precision base + adapter (3-bit g32, lower is better)")
    for method, vals in rows.items():
        print(f"{method:10s} " + "  ".join(f"{n}={v:.5f}" for n, v in vals.items()))


if __name__ == "__main__":
    main()
