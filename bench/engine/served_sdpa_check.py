"""The eager prefill path's SDPA on the device: host time of the first call of each new (query, context) length pair
with cuDNN's attention (the torch default seen in served eager steps) against llama_fast.EAGER_SDPA_BACKENDS (flash /
memory-efficient), and llama_fast._attend (which uses the latter) against attention.paged_attention_reference in fp32.
Llama-2-7B attention shape (32 heads, head_dim 128), fp16, 16-token KV blocks.

  PYTHONPATH=workers python3 bench/engine/served_sdpa_check.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from inlaid_worker.model import llama_fast
from inlaid_worker.model.attention import AttentionMetadata, paged_attention_reference
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, HD, BS = 32, 128, 16
CUDNN = [SDPBackend.CUDNN_ATTENTION]


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t0)


def sdpa_times(dev: torch.device, shapes: list[tuple[int, int]], backends: list[SDPBackend]) -> list[dict]:
    rows = []
    for qlen, ctx in shapes:
        q = torch.randn(1, HEADS, qlen, HD, device=dev, dtype=torch.float16)
        k = torch.randn(1, HEADS, ctx, HD, device=dev, dtype=torch.float16)
        v = torch.randn_like(k)
        pos = torch.arange(ctx - qlen, ctx, device=dev)
        mask = torch.arange(ctx, device=dev)[None, :] <= pos[:, None]
        kw = dict(is_causal=True) if qlen == ctx else dict(attn_mask=mask)
        with sdpa_kernel(backends):
            first = timed(lambda: F.scaled_dot_product_attention(q, k, v, **kw))
            again = min(timed(lambda: F.scaled_dot_product_attention(q, k, v, **kw)) for _ in range(3))
        rows.append(dict(qlen=qlen, ctx=ctx, first_ms=first, again_ms=again))
    return rows


def attend_check(dev: torch.device, chunks: list[tuple[int, int]]) -> dict:
    """_attend (EAGER_SDPA_BACKENDS) on prefill chunks of a random paged cache vs the fp32 reference."""
    g = torch.Generator(device="cpu").manual_seed(0)
    blocks = sum(-(-ctx // BS) for _, ctx in chunks) + 1
    k_cache = torch.randn(blocks, BS, HEADS, HD, generator=g).to(dev, torch.float16)
    v_cache = torch.randn(blocks, BS, HEADS, HD, generator=g).to(dev, torch.float16)
    perm = torch.randperm(blocks - 1, generator=g) + 1
    width = max(-(-ctx // BS) for _, ctx in chunks)
    tables, qsl, lens, used = torch.zeros(len(chunks), width, dtype=torch.int64), [0], [], 0
    for s, (qlen, ctx) in enumerate(chunks):
        n = -(-ctx // BS)
        tables[s, :n] = perm[used : used + n]
        used += n
        qsl.append(qsl[-1] + qlen)
        lens.append(ctx)
    q = torch.randn(qsl[-1], HEADS, HD, generator=g).to(dev, torch.float16)
    layout = llama_fast.mixed_layout(qsl, lens, tables.to(dev), BS)
    ms = timed(lambda: llama_fast._attend(q, k_cache, v_cache, layout, HD**-0.5))
    got = llama_fast._attend(q, k_cache, v_cache, layout, HD**-0.5).float()
    meta = AttentionMetadata.build(torch.zeros(qsl[-1], dtype=torch.int64, device=dev), qsl, lens, tables.to(dev), BS)
    want = paged_attention_reference(q.float(), k_cache.float(), v_cache.float(), meta, HD**-0.5)
    return dict(chunks=chunks, first_call_ms=ms, max_abs_err_vs_fp32=float((got - want).abs().max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    dev = torch.device("cuda")
    with torch.inference_mode():
        warm = sdpa_times(dev, [(64, 64), (64, 80)], list(llama_fast.EAGER_SDPA_BACKENDS))  # library loads
        warm += sdpa_times(dev, [(64, 64), (64, 80)], CUDNN)
        shapes = [(1800, 1800), (1432, 1432), (700, 2100), (513, 3001), (1024, 1990), (257, 777)]
        cudnn = sdpa_times(dev, shapes, CUDNN)
        eager = sdpa_times(dev, [(q + 1, c + 1) for q, c in shapes], list(llama_fast.EAGER_SDPA_BACKENDS))
        check = attend_check(dev, [(900, 900), (600, 1700), (300, 2500)])  # prefill chunks only (no Triton)
    doc = dict(device=torch.cuda.get_device_name(dev), torch=torch.__version__, warm=warm, cudnn=cudnn, eager=eager,
               attend=check)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sdpa-check.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
