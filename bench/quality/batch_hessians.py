"""Per-task Hessians of every layer at once on the full-precision model (batched, right-padded).

Same quantity as inlaid_worker.quant.hessian (step_layer over open_stream): per input group
H = (2 / n) sum over the task's calibration tokens of x x^T in fp32, with the task's LoRA active (here:
merged into the weights, which leaves every linear's input the same), symmetrised. The streams never see
quantized weights, so one forward per (task, seed, adapter on/off) serves every method and bit width.
Returns raw sums and token counts so that pooled GPTQ can add tasks up (sum_t S_t * 2 / sum_t n_t).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

GROUP_INPUT = {"qkv": "self_attn.q_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_proj", "down": "mlp.down_proj"}


@contextmanager
def merged(model: nn.Module, adapter) -> None:
    """Within the block the model's linears are W + scaling * B A for the adapter's modules
    (inlaid_worker.quant.adapter.TaskAdapter); the original weights come back afterwards, bit for bit."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    layers = model.model.layers
    try:
        if adapter is not None:
            for li, deltas in adapter.deltas.items():
                for path, d in deltas.items():
                    w = layers[li].get_submodule(path).weight
                    saved.append((w, w.detach().clone()))
                    w.data += d.scaling * (d.b.to(w) @ d.a.to(w))
        yield
    finally:
        for w, orig in saved:
            w.data.copy_(orig)


@torch.no_grad()
def collect_sums(
    model: nn.Module, seqs: Sequence[torch.Tensor], device: torch.device | str, batch: int = 32
) -> tuple[dict[str, torch.Tensor], int]:
    """({group: sum x x^T [L, K, K] fp32}, tokens) over `seqs` (1-D id tensors) on the model as it is."""
    layers = model.model.layers
    sums: dict[str, torch.Tensor] = {}
    keep: list[torch.Tensor] = []  # current batch's flat token mask

    def hook(li: int, group: str):
        def pre(_m, args):
            x = args[0].reshape(-1, args[0].shape[-1]).float()[keep[0]]
            key = group
            xtx = x.t() @ x
            if key not in sums:
                k = xtx.shape[0]
                sums[key] = torch.zeros(len(layers), k, k, device=xtx.device)
            sums[key][li] += xtx

        return pre

    handles = [
        lay.get_submodule(path).register_forward_pre_hook(hook(li, g))
        for li, lay in enumerate(layers)
        for g, path in GROUP_INPUT.items()
    ]
    tokens = 0
    try:
        for i in range(0, len(seqs), batch):
            part = seqs[i : i + batch]
            width = max(int(s.numel()) for s in part)
            ids = torch.zeros(len(part), width, dtype=torch.long)
            mask = torch.zeros(len(part), width, dtype=torch.long)
            for j, s in enumerate(part):
                ids[j, : s.numel()], mask[j, : s.numel()] = s, 1
            keep[:] = [mask.reshape(-1).bool().to(device)]
            tokens += int(mask.sum())
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return sums, tokens


def finalize(s: torch.Tensor, tokens: int) -> torch.Tensor:
    """H = (2 / n) sum x x^T, exactly symmetric (as inlaid_worker.quant.hessian.finalize), batched."""
    h = s * (2.0 / tokens)
    return (h + h.transpose(-1, -2)) * 0.5
