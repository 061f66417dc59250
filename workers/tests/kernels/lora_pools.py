"""Random multi-LoRA adapter pools and case inputs for the LoRA kernel tests (test_pdl_lora, test_lora_grouped,
test_lora_partials), imported by those files both in pytest and when they run as interpreter scripts (this directory
is then sys.path[0])."""

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


def lora_inputs(ids: list, k: int, widths: tuple, rank: int, graph_rows: bool, device: str, seed: int,
                distinct_scalings: bool, block_m: int = 1, extra_cols: int = 0) -> tuple:  # fmt: skip
    """(pools, x, y0, batch) of a LoRA kernel case: lora_pools(seed), then x [T, k] and y0 [T, sum(widths) +
    extra_cols] from a generator seeded with seed + 1; fp16 on CUDA, fp32 on the CPU. graph_rows: the batch as
    decode_graphs stages a bucket (one row per block; padding rows have slot 0 and no row), else make_lora_batch."""
    from inlaid_worker.kernels.lora_batch import LoraBatch, make_lora_batch

    dt = torch.float16 if device == "cuda" else torch.float32
    pools = lora_pools(k, widths, rank, device, dt, seed, distinct_scalings)
    g = torch.Generator().manual_seed(seed + 1)
    t = len(ids)
    x = torch.randn(t, k, generator=g).to(device=device, dtype=dt)
    y0 = torch.randn(t, sum(widths) + extra_cols, generator=g).to(device=device, dtype=dt)
    if graph_rows:
        ar = torch.arange(t, dtype=torch.int32, device=device)
        slot = torch.tensor([max(a, 0) for a in ids], dtype=torch.int32, device=device)
        rows = torch.tensor([int(a >= 0) for a in ids], dtype=torch.int32, device=device)
        batch = LoraBatch(ar, slot, ar, rows, 1, t, rank)
    else:
        batch = make_lora_batch(ids, [int(r) for r in pools[0].ranks], block_m, device)
    return pools, x, y0, batch
