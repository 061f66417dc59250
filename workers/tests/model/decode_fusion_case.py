"""One decode step of the tiny model through forward_fast with each decode fusion (llama_fast.DECODE_FUSIONS) on
the same random KV cache; prints one JSON line: per fusion, the hidden states' and the caches' relative error
against the unfused path ("none") and against the torch reference forward. Run as a script under
TRITON_INTERPRET=1 on the CPU (see test_decode_fusion.py)."""

from __future__ import annotations

import json
import os
import sys

import torch


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def run(model_dir: str) -> dict[str, dict[str, float]]:
    from inlaid_worker.model.attention import AttentionMetadata
    from inlaid_worker.model.llama import forward
    from inlaid_worker.model.llama_fast import DECODE_FUSIONS, DecodeLayout, forward_fast
    from inlaid_worker.model.rope import cos_sin
    from inlaid_worker.model.runner import ModelRunner

    bs = 4
    runner = ModelRunner(model_dir, num_kv_blocks=24, block_size=bs, backend="triton")
    c, w = runner.config, runner.weights
    g = torch.Generator().manual_seed(0)
    cache0 = torch.randn(runner.kv_cache.shape, generator=g) * 0.5
    lens = torch.tensor([7, 13, 1, 0], dtype=torch.int32)  # the last row: CUDA-graph padding
    tables = torch.arange(24, dtype=torch.int32).reshape(4, 6)
    last = (lens - 1).clamp_min(0).long()
    slots = tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs
    slots[3] = -1
    tokens = torch.randint(3, c.vocab_size, (4,), generator=g)
    inv_freq = runner._inv_freq
    cos, sin = cos_sin(inv_freq, last, runner.dtype)
    out: dict[str, dict[str, float]] = {}
    results = {}
    for fusion in DECODE_FUSIONS:
        cache = cache0.clone()
        layout = DecodeLayout(tables, lens, 2, fusion, last, inv_freq)
        rope = (None, None) if fusion == "rope" else (cos[:, 0], sin[:, 0])
        hidden = forward_fast(w, c, tokens, *rope, slots, cache, layout, None)
        results[fusion] = (hidden[:3], cache)
    ref_cache = cache0.clone()
    live = [0, 1, 2]
    meta = AttentionMetadata.build(slots[live], [0, 1, 2, 3], lens[live].tolist(), tables[live].long(), bs)
    ref = forward(w, c, tokens[live], cos_sin(inv_freq, last[live], runner.dtype), ref_cache, meta, None)
    for fusion, (hidden, cache) in results.items():
        out[fusion] = dict(vs_none=_rel(hidden, results["none"][0]), cache_vs_none=_rel(cache, results["none"][1]),
                           vs_reference=_rel(hidden, ref), cache_vs_reference=_rel(cache, ref_cache),
                           finite=float(bool(torch.isfinite(hidden).all())))  # fmt: skip
    return out


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        from cases import _patch_interpreter_for_numpy

        _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    print(json.dumps(run(sys.argv[1])))


if __name__ == "__main__":
    main()
