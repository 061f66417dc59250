"""Next-token sampling: greedy, temperature, top-k, top-p, and per-request seeds.

Each row is sampled with its own torch.Generator (seeded from the request's seed, or from a fresh random
seed), so a request's tokens depend only on its own logits and seed, never on its batch-mates.
"""

from __future__ import annotations

import random
from collections.abc import Sequence as Seq

import torch

from inlaid_worker.engine.sampling_params import SamplingParams


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    # torch seeds are < 2^64; an unseeded request still gets its own stream, independent of others.
    g.manual_seed(seed if seed is not None else random.getrandbits(63))
    return g


def restrict_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Scaled logits of one row with tokens outside top-k / the top-p nucleus set to -inf.

    logits: [V] float32. The nucleus is the smallest set of most likely tokens whose mass reaches top_p.
    """
    x = logits.float() / temperature
    vocab = x.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p  # the first token is always kept (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


def sample(
    logits: torch.Tensor, params: Seq[SamplingParams], generators: Seq[torch.Generator | None]
) -> list[int]:
    """One token per row. logits: [S, V] float32; params and generators: one per row."""
    if logits.dim() != 2 or logits.shape[0] != len(params) or len(params) != len(generators):
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match {len(params)} params / {len(generators)} generators"
        )
    logits = logits.float().cpu()  # the generators live on the CPU
    tokens: list[int] = []
    greedy = logits.argmax(dim=-1).tolist()  # [S]
    for row, (p, g) in enumerate(zip(params, generators, strict=False)):
        if p.greedy:
            tokens.append(int(greedy[row]))
            continue
        x = restrict_logits(logits[row], p.temperature, p.top_k, p.top_p)
        probs = torch.softmax(x, dim=-1)
        tokens.append(int(torch.multinomial(probs, 1, generator=g).item()))
    return tokens
