"""The magnitude rule for LoRA weights: everything an adapter contributes must fit in float16.

A served adapter's lora_A and lora_B are cast as stored to the serving dtype (float16 on the GPU), and its weight
delta scaling * B @ A is what the adapter adds to the base weight (what a PEFT merge would add). Both must be
representable in float16 (largest finite value 65504), whatever this worker's --dtype, so that whether an adapter is
accepted does not depend on the worker that validates it. Without this rule an adapter with finite but huge weights
(e.g. 1e30) passed validation, was served, and failed only at re-quantization, when its delta overflowed float32.

The delta is bounded without forming it (it is out x in per module):

    |scaling * (B @ A)[i, j]| <= |scaling| * sum_k max_i |B[i, k]| * max_j |A[k, j]|

an upper bound that is reached when one row of B and one column of A hold each component's largest values (and
their signs agree). Real adapters sit 4 to 6 orders of magnitude below both limits (docs/adding-tasks.md).
The rule does not bound activations, which depend on the inputs: an adapter within it can still overflow in a
forward pass, and would then fail at re-quantization with the previous weights serving.
"""

from __future__ import annotations

import torch

FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504.0


def tensor_problem(name: str, tensor: torch.Tensor) -> str | None:
    """Why a (finite) tensor cannot be served: a value above float16's largest in magnitude; None if it can."""
    if tensor.numel() == 0:
        return None
    peak = float(tensor.detach().abs().max().double())
    if peak > FP16_MAX:
        return (
            f"tensor {name!r} holds values up to {peak:.3g} in magnitude; LoRA weights above {FP16_MAX:g} "
            "(float16's largest value) cannot be served"
        )
    return None


def delta_bound(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    """An upper bound on max |scale * (b @ a)| for a [rank, in] and b [out, rank], in float64 (no overflow)."""
    if a.numel() == 0 or b.numel() == 0:
        return 0.0
    col = a.detach().abs().amax(dim=1).double()  # per component k: max_j |A[k, j]|
    row = b.detach().abs().amax(dim=0).double()  # per component k: max_i |B[i, k]|
    return abs(scale) * float((col * row).sum())


def delta_problem(name_a: str, name_b: str, a: torch.Tensor, b: torch.Tensor, scale: float) -> str | None:
    """Why a pair cannot be served: its delta scale * B @ A may hold a value above float16's largest; else None.
    A scale below 1 counts as 1: the eager path (lora/apply.py) multiplies by the scale after B's product, in the
    serving dtype, so B @ A itself must fit too."""
    bound = delta_bound(a, b, max(abs(scale), 1.0))
    if bound > FP16_MAX:
        return (
            f"tensors {name_a!r} and {name_b!r}: their LoRA delta scaling * lora_B @ lora_A (scaling {scale:g}) "
            f"can reach {bound:.3g} in magnitude; deltas above {FP16_MAX:g} (float16's largest value) cannot be "
            "served"
        )
    return None
