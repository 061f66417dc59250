"""Held-out layer error: choose among quantization configs without looking at the test split.

Each task's Hessians come from sequences no config was calibrated on: n examples of the task's train split
(disjoint from calib and test), rendered as the calibration data are, with the task's adapter merged. The
score of a quantized base on task t is GPTQ's own objective under that Hessian, relative to the weights'
energy, averaged over the 30 layers and the four input groups (q/k/v fused, o, gate/up fused, down):
tr(dW H_t dW^T) / tr(W H_t W^T), dW = W_q - W. A row's number is the mean over tasks (per-task GPTQ: each
task's own base) and seeds.
"""

from __future__ import annotations

import torch
from batch_hessians import collect_sums, merged
from inlaid_worker.quant.calib import select
from inlaid_worker.tasks.chat import render_answer, render_prompt
from inlaid_worker.tasks.example import load_split


def heldout_seqs(tok, task: str, n: int, seed: int) -> list[torch.Tensor]:
    texts = [render_prompt(e.prompt) + render_answer(e.target) + "\n" for e in load_split(task, "train")]
    seqs = [torch.tensor(tok(t, add_special_tokens=False)["input_ids"][:512]) for t in texts]
    return select(seqs, n, seed)


def heldout_hessians(model, tok, tasks: list[str], adapter, n: int, seed: int, device) -> dict[str, dict]:
    """{task: {group: sum x x^T [L, K, K]}} (unnormalised: the score is a ratio)."""
    out = {}
    for t in tasks:
        with merged(model, adapter(t)):
            out[t], _ = collect_sums(model, heldout_seqs(tok, t, n, seed), device)
    return out


@torch.no_grad()
def rel_error(base: dict[str, torch.Tensor], quant: dict[str, torch.Tensor], h: dict[str, torch.Tensor]) -> float:
    """Mean over layers and groups of tr(dW H dW^T) / tr(W H W^T); weights [L, N, K], H [L, K, K]."""
    vals = []
    for g, w in base.items():
        hg = h[g].to(w)
        dw = quant[g].to(w) - w
        num = (torch.bmm(dw, hg) * dw).sum(dim=(1, 2))
        den = (torch.bmm(w, hg) * w).sum(dim=(1, 2))
        vals.append(num / den)
    return float(torch.cat(vals).mean())
