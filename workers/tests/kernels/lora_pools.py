"""Random multi-LoRA adapter pools for the LoRA kernel tests (test_pdl_lora, test_lora_grouped), imported by those
files both in pytest and when they run as interpreter scripts (this directory is then sys.path[0])."""

from __future__ import annotations

import torch


def lora_pools(
    k: int, widths: tuple, rank: int, device: str, dt: torch.dtype, seed: int, distinct_scalings: bool
) -> list:
    """One stacked pool (lora_batch.stack_adapters) per output width, of three adapters: ranks rank, rank // 2, rank
    (rows past an adapter's rank are padding), drawn in a fixed order from a generator seeded with `seed`. Scalings
    2 / r, or (2 + slot) / r with distinct_scalings (slots 0 and 2 then share a rank, not a scaling)."""
    from inlaid_worker.kernels.lora_batch import stack_adapters

    g = torch.Generator().manual_seed(seed)
    pools = []
    for n in widths:
        adapters = []
        for slot in range(3):
            r = rank if slot % 2 == 0 else max(1, rank // 2)
            a = (torch.randn(r, k, generator=g) / k**0.5).to(device=device, dtype=dt)
            b = torch.randn(n, r, generator=g).to(device=device, dtype=dt)
            adapters.append((a, b, (2.0 + (slot if distinct_scalings else 0)) / r))
        pools.append(stack_adapters(adapters, rank))
    return pools
