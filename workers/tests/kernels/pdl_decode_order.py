"""The PDL ordering checks of the decode attention kernels (CUDA, compute capability 9+): a step captured in a CUDA
graph under kernels.pdl mode 1, and the new token's K/V read only after the kernel's wait."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

K = TypeVar("K")


def capture_under_pdl(fn: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """fn() once (compiled outside the capture), then captured in a CUDA graph under kernels.pdl mode 1: (the graph,
    the captured call's output)."""
    from inlaid_worker.kernels import pdl

    with pdl.scope(1) as mode:
        assert mode == 1
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = fn()
    return g, out


def new_token_errors(spin: Any, options: Mapping[K, dict[str, Any]]) -> dict[K, float]:
    """Per entry of `options` (paged_decode's keyword arguments, impl included): a PDL graph of `spin` (one program
    that lets dependents launch at once), rope_cache writing the new tokens' K/V, then paged_decode with them; the new
    slots are clobbered before the replay, and the output's relative error against paged_decode_reference is
    returned. A kernel that reads the new token only after its wait matches; one that reads it before does not."""
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.paged_decode import paged_decode, paged_decode_reference
    from inlaid_worker.kernels.rope_cache import rope_and_cache
    from inlaid_worker.model.rope import cos_sin

    torch.manual_seed(0)
    dev, h, d, bs = "cuda", 8, 128, 16
    lens = torch.tensor([5, 16, 17, 100, 0, 33], dtype=torch.int32, device=dev)
    k_cache = torch.randn(48, bs, h, d, device=dev).half()
    v_cache = torch.randn(48, bs, h, d, device=dev).half()
    tables = torch.randperm(48, device=dev)[:42].reshape(6, 7).to(torch.int32)
    last = (lens - 1).clamp_min(0).long()
    slots = (tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs).to(torch.int32)
    slots[4] = -1
    qkv = torch.randn(6, 3 * h * d, device=dev).half()
    cos, sin = cos_sin(1.0 / (10000 ** (torch.arange(0, d, 2, device=dev) / d)), last, torch.float16)
    x = torch.zeros(1, device=dev)
    errs = {}
    for key, kw in options.items():

        def fn(kw: dict[str, Any] = kw) -> tuple[torch.Tensor, torch.Tensor]:
            spin[(1,)](x, 20000, **pdl.launch_kw())
            q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, k_cache, v_cache, h)
            return q, paged_decode(q, k_cache, v_cache, tables, lens, d**-0.5, num_parts=4, **kw)

        g, (q, out) = capture_under_pdl(fn)
        live = slots[slots >= 0].long()
        k_cache.view(-1, h, d)[live] = 30.0
        v_cache.view(-1, h, d)[live] = 30.0
        g.replay()
        torch.cuda.synchronize()
        ref = paged_decode_reference(q, k_cache, v_cache, tables, lens, d**-0.5).float()
        errs[key] = float((out.float() - ref).norm() / ref.norm())
    return errs
