"""Check cases for the decode-path kernels (paged decode attention, add+RMSNorm, rotary+KV write, SwiGLU)
against their torch references; run in-process on CUDA, or as a script under TRITON_INTERPRET=1 on the CPU
(prints one JSON line: case id -> result). Small shapes: each case takes about a second interpreted."""

from __future__ import annotations

from typing import Any

import torch
from hgemv_variants import main, seeded_cases

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}  # bf16: cpu_cov_bf16 on the CPU
FUSED_CASES: dict[str, dict[str, Any]] = {
    "decode-gqa-fp32-1part": dict(kind="decode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=1),
    "decode-gqa-fp32-4parts": dict(kind="decode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=4),
    "decode-mha-fp16-2parts": dict(kind="decode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=2),
    "decode-d24-fp32": dict(kind="decode", dtype="fp32", heads=3, kv_heads=1, d=24, parts=2),
    # impl "split" (interleaved tiles, CUDA-core products): tiles of 2 / 4 / 8 tokens over blocks of 4, partitions
    # looping over several tiles, both merges, the first tile loaded before or after the PDL wait
    "split-mha-fp16-4parts": dict(kind="decode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=4, impl="split",
                                  split=dict(block_n=4)),
    "split-mha-fp32-2parts-tile2": dict(kind="decode", dtype="fp32", heads=3, kv_heads=3, d=24, parts=2,
                                        impl="split", split=dict(block_n=2)),
    "split-gqa-fp32-4parts-merge2": dict(kind="decode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=4,
                                         impl="split", split=dict(block_n=4, merge=2)),
    "split-mha-fp16-8parts-merge2-noprefetch": dict(kind="decode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=8,
                                                    impl="split", split=dict(block_n=2, merge=2, prefetch=False)),
    "split-gqa-fp16-1part-tile8": dict(kind="decode", dtype="fp16", heads=4, kv_heads=1, d=16, parts=1,
                                       impl="split", split=dict(block_n=8)),
    "split-gqa-fp16-2parts-noahead": dict(kind="decode", dtype="fp16", heads=4, kv_heads=2, d=16, parts=2,
                                          impl="split", split=dict(block_n=2, lookahead=0, num_warps=2)),
    # impl "tiles" with its first tile loaded before the PDL wait (tiles_prefetch 1; 2: the new row early too),
    # tiles of 16 tokens so partitions loop over a second tile or are empty
    "tiles-mha-fp16-1part-prefetch": dict(kind="decode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=1,
                                          tiles=dict(tiles_prefetch=1, tiles_block_n=16)),
    "tiles-gqa-fp32-4parts-prefetch": dict(kind="decode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=4,
                                           tiles=dict(tiles_prefetch=1, tiles_block_n=16)),
    "tiles-d24-fp32-2parts-prefetch2": dict(kind="decode", dtype="fp32", heads=3, kv_heads=1, d=24, parts=2,
                                            tiles=dict(tiles_prefetch=2, tiles_block_n=16)),
    "tiles-mha-fp16-2parts-tile16": dict(kind="decode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=2,
                                         tiles=dict(tiles_prefetch=0, tiles_block_n=16)),
    # tiles with SKIP_EMPTY: partitions past the context exit before the PDL wait, the merge reads only the others
    # (every case's partition workspace starts as NaN, so a row read but never written shows)
    "tiles-mha-fp16-4parts-skip": dict(kind="decode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=4,
                                       tiles=dict(tiles_prefetch=0, tiles_block_n=16, skip_empty=1)),
    "tiles-gqa-fp32-8parts-skip-prefetch": dict(kind="decode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=8,
                                                tiles=dict(tiles_prefetch=1, tiles_block_n=16, skip_empty=1)),
    "tiles-d24-fp32-2parts-skip": dict(kind="decode", dtype="fp32", heads=3, kv_heads=1, d=24, parts=2,
                                       tiles=dict(tiles_prefetch=0, tiles_block_n=16, skip_empty=1)),
    "fdecode-gqa-fp32-4parts": dict(kind="fdecode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=4),
    "fdecode-mha-fp16-2parts": dict(kind="fdecode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=2),
    "fdecode-d24-fp32-1part": dict(kind="fdecode", dtype="fp32", heads=3, kv_heads=1, d=24, parts=1),
    "rdecode-gqa-fp32-4parts": dict(kind="rdecode", dtype="fp32", heads=4, kv_heads=2, d=16, parts=4),
    "rdecode-mha-fp16-2parts": dict(kind="rdecode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=2),
    "rdecode-d24-fp32-1part": dict(kind="rdecode", dtype="fp32", heads=3, kv_heads=1, d=24, parts=1),
    "rdecode-gqa-fp16-8parts": dict(kind="rdecode", dtype="fp16", heads=4, kv_heads=2, d=16, parts=8),
    "fdecode-mha-fp16-vec-4parts": dict(kind="fdecode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=4, vec=True),
    "rdecode-mha-fp32-vec-2parts": dict(kind="rdecode", dtype="fp32", heads=3, kv_heads=3, d=24, parts=2, vec=True),
    "rdecode-mha-fp16-vec-1part": dict(kind="rdecode", dtype="fp16", heads=2, kv_heads=2, d=32, parts=1, vec=True),
    "rdecode-gqa-fp16-vec-ignored": dict(kind="rdecode", dtype="fp16", heads=4, kv_heads=2, d=16, parts=2, vec=True),
    "norm-residual-fp16": dict(kind="norm", dtype="fp16", residual=True, n=96),
    "norm-plain-fp32": dict(kind="norm", dtype="fp32", residual=False, n=64),
    "norm-residual-bf16": dict(kind="norm", dtype="bf16", residual=True, n=80),  # interpreted with patch_bf16
    "rope-cache-fp32": dict(kind="rope", dtype="fp32", heads=4, kv_heads=2, d=16),
    "rope-cache-fp16": dict(kind="rope", dtype="fp16", heads=2, kv_heads=2, d=32),
    "silu-mul-fp16": dict(kind="silu", dtype="fp16", inter=80),
    "lora-qkv-bgmv-fp16": dict(kind="lora3", dtype="fp16", t=7, block_m=1, segs=(0, 1, 2)),
    "lora-qv-sgmv-fp16": dict(kind="lora3", dtype="fp16", t=40, block_m=16, segs=(0, 2)),
    "lora-k-only-fp16": dict(kind="lora3", dtype="fp16", t=5, block_m=1, segs=(1,)),
}


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    if not bool(torch.isfinite(out).all()):
        return float("inf")
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def _nan_workspace(n: int, d_pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """paged_decode's partition workspace filled with NaN: a row the merge reads but no partition wrote shows."""
    pm = torch.full((n,), float("nan"), dtype=torch.float32, device=device)
    return pm, pm.clone(), torch.full((n, d_pad), float("nan"), dtype=torch.float32, device=device)


def run_decode(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels import paged_decode as pd_mod
    from inlaid_worker.kernels.paged_decode import paged_decode, paged_decode_reference

    dtype, bs, blocks = DTYPES[p["dtype"]], 4, 24
    k_cache = torch.randn(blocks, bs, p["kv_heads"], p["d"], device=dev).to(dtype)
    v_cache = torch.randn(blocks, bs, p["kv_heads"], p["d"], device=dev).to(dtype)
    lens = torch.tensor([9, 0, 1, 23, 4], dtype=torch.int32, device=dev)  # 0: a padding row
    tables = torch.stack([torch.randperm(blocks)[:6] for _ in lens]).to(dev, torch.int32)
    q = torch.randn(len(lens), p["heads"], p["d"], device=dev).to(dtype)
    scale = p["d"] ** -0.5
    kw = dict(num_parts=p["parts"], impl=p.get("impl", "tiles"), **p.get("split", {}), **p.get("tiles", {}))
    if "tiles" in p:
        kw["tune"] = False  # the tile of the case, also on CUDA
    plain, pd_mod.workspace = pd_mod.workspace, _nan_workspace  # every case: unwritten rows must not be read
    try:
        out = paged_decode(q, k_cache, v_cache, tables, lens, scale, **kw)
    finally:
        pd_mod.workspace = plain
    ref = paged_decode_reference(q, k_cache, v_cache, tables, lens, scale)
    res = dict(err=_rel(out, ref), pad_row_zero=bool((out[1] == 0).all()))
    if p.get("split", {}).get("merge") == 2:  # the arrival counters are left at 0; a rerun gives the same output
        from inlaid_worker.kernels import decode_fused

        again = paged_decode(q, k_cache, v_cache, tables, lens, scale, **kw)
        res.update(rerun_same=bool(torch.equal(out, again)),
                   counters_clean=bool((decode_fused._COUNTERS[k_cache.device] == 0).all()))  # fmt: skip
    return res


def _decode_inputs(p: dict[str, Any], dev: str) -> tuple[torch.Tensor, ...]:
    """Caches, disjoint block tables (a new token's slot is in no other row's context) and context lens: rows of
    9, 0 (padding), 1, 23 and 4 tokens."""
    dtype, bs, blocks = DTYPES[p["dtype"]], 4, 32
    k_cache = torch.randn(blocks, bs, p["kv_heads"], p["d"], device=dev).to(dtype)
    v_cache = torch.randn(blocks, bs, p["kv_heads"], p["d"], device=dev).to(dtype)
    lens = torch.tensor([9, 0, 1, 23, 4], dtype=torch.int32, device=dev)
    tables = torch.randperm(blocks)[:30].reshape(5, 6).to(dev, torch.int32)
    return k_cache, v_cache, tables, lens


def run_fdecode(p: dict[str, Any], dev: str) -> dict[str, Any]:
    """decode_fused.decode_attention (merge inside the kernel) against paged_decode's reference."""
    from inlaid_worker.kernels import decode_fused
    from inlaid_worker.kernels.paged_decode import paged_decode_reference

    k_cache, v_cache, tables, lens = _decode_inputs(p, dev)
    q = torch.randn(len(lens), p["heads"], p["d"], device=dev).to(k_cache.dtype)
    scale = p["d"] ** -0.5
    kw = dict(num_parts=p["parts"], tune=False, vec_mha=p.get("vec", False))
    out = decode_fused.decode_attention(q, k_cache, v_cache, tables, lens, scale, **kw)
    ref = paged_decode_reference(q, k_cache, v_cache, tables, lens, scale)
    again = decode_fused.decode_attention(q, k_cache, v_cache, tables, lens, scale, **kw)
    return dict(err=_rel(out, ref), pad_row_zero=bool((out[1] == 0).all()), rerun_same=bool(torch.equal(out, again)),
                counters_clean=bool((decode_fused._COUNTERS[k_cache.device] == 0).all()))  # fmt: skip


def run_rdecode(p: dict[str, Any], dev: str) -> dict[str, Any]:
    """decode_fused.rope_decode_attention (rotary + KV write + attention + merge) against the reference chain;
    row 2 has slot -1 (its last position is read from the cache, nothing written)."""
    from inlaid_worker.kernels import decode_fused

    k_cache, v_cache, tables, lens = _decode_inputs(p, dev)
    h, kvh, d, bs = p["heads"], p["kv_heads"], p["d"], k_cache.shape[1]
    qkv = torch.randn(len(lens), (h + 2 * kvh) * d, device=dev).to(k_cache.dtype)
    last = (lens - 1).clamp_min(0).long()
    slots = (tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs).to(torch.int32)
    slots[1] = slots[2] = -1  # padding row; a row that writes nothing
    positions = last + 1000 * torch.arange(len(lens), device=dev)  # large angles too
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d))
    caches = [k_cache.clone(), v_cache.clone()]
    scale = d**-0.5
    out = decode_fused.rope_decode_attention(qkv, positions, inv_freq, slots, k_cache, v_cache, tables, lens, scale,
                                             h, p["parts"], tune=False, vec_mha=p.get("vec", False))  # fmt: skip
    ref = decode_fused.rope_decode_reference(qkv, positions, inv_freq, slots, caches[0], caches[1], tables, lens,
                                             scale, h)  # fmt: skip
    return dict(err=_rel(out, ref), k_err=_rel(k_cache, caches[0]), v_err=_rel(v_cache, caches[1]),
                new_k_err=_rel(k_cache.view(-1, kvh, d)[slots[[0, 3]].long()], caches[0].view(-1, kvh, d)[slots[[0, 3]].long()]),
                pad_row_zero=bool((out[1] == 0).all()),
                counters_clean=bool((decode_fused._COUNTERS[k_cache.device] == 0).all()))  # fmt: skip


def run_norm(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels.fused_norm import add_rms_norm, add_rms_norm_reference

    dtype, n = DTYPES[p["dtype"]], p["n"]
    x = torch.randn(5, n, device=dev).to(dtype)
    w = (1 + 0.1 * torch.randn(n, device=dev)).to(dtype)
    res = torch.randn(5, n, device=dev).to(dtype) if p["residual"] else None
    res_ref = res.clone() if res is not None else None
    out = add_rms_norm(x, w, 1e-5, res)
    ref = add_rms_norm_reference(x, w, 1e-5, res_ref)
    res_err = _rel(res, res_ref) if res is not None else 0.0
    return dict(err=_rel(out, ref), residual_err=res_err)


def run_rope(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels.rope_cache import rope_and_cache, rope_and_cache_reference
    from inlaid_worker.model.rope import cos_sin

    dtype, h, kvh, d, t, bs = DTYPES[p["dtype"]], p["heads"], p["kv_heads"], p["d"], 6, 4
    qkv = torch.randn(t, (h + 2 * kvh) * d, device=dev).to(dtype)
    cos, sin = cos_sin(1.0 / (10000 ** (torch.arange(0, d, 2, device=dev) / d)), torch.arange(t, device=dev) * 7, dtype)
    slots = torch.tensor([3, 0, -1, 9, 12, 5], dtype=torch.int32, device=dev)
    caches = [torch.zeros(4, bs, kvh, d, device=dev, dtype=dtype) for _ in range(4)]
    q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, caches[0], caches[1], h)
    q_ref = rope_and_cache_reference(qkv, cos[:, 0], sin[:, 0], slots, caches[2], caches[3], h)
    return dict(err=_rel(q, q_ref), k_err=_rel(caches[0], caches[2]), v_err=_rel(caches[1], caches[3]),
                skipped_untouched=bool((caches[0].view(-1, kvh, d)[[1, 2, 4]] == 0).all()))  # fmt: skip


def run_silu(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels.silu_mul import silu_mul, silu_mul_reference

    gu = torch.randn(3, 2 * p["inter"], device=dev).to(DTYPES[p["dtype"]])
    return dict(err=_rel(silu_mul(gu), silu_mul_reference(gu)))


def run_lora3(p: dict[str, Any], dev: str) -> dict[str, Any]:
    from inlaid_worker.kernels.lora_batch import make_lora_batch, stack_adapters
    from inlaid_worker.kernels.lora_fused import lora_apply_fused, lora_fused_reference

    dtype, k, widths, t = DTYPES[p["dtype"]], 64, (64, 32, 32), p["t"]
    pools, cols = [], []
    for seg in p["segs"]:
        ranks = (4, 16, 8) if seg != 1 else (8, 0, 16)  # slot 1 does not target k
        adapters = [(torch.randn(max(r, 1), k) * 0.1 * (r > 0), torch.randn(widths[seg], max(r, 1)) * 0.1, 2.0)
                    for r in ranks]  # fmt: skip
        pools.append(stack_adapters([(a.to(dev, dtype), b.to(dev, dtype), sc) for a, b, sc in adapters]))
        cols.append(sum(widths[:seg]))
    ids = torch.randint(-1, 3, (t,))
    batch = make_lora_batch(ids.tolist(), [16, 16, 16], p["block_m"], dev)
    x = torch.randn(t, k, device=dev).to(dtype)
    y = (torch.randn(t, sum(widths), device=dev) * 0.01).to(dtype)
    ref = lora_fused_reference(y, x, pools, cols, ids)
    out = lora_apply_fused(y.clone(), x, pools, cols, batch)
    base = (ids < 0).to(dev)
    return dict(err=_rel(out, ref), base_unchanged=bool(torch.equal(out[base], y[base])))


RUNNERS = dict(decode=run_decode, fdecode=run_fdecode, rdecode=run_rdecode, norm=run_norm, rope=run_rope,
               silu=run_silu, lora3=run_lora3)  # fmt: skip
run_case = seeded_cases(FUSED_CASES, lambda p, device: RUNNERS[p["kind"]](p, device))


if __name__ == "__main__":
    main(list(FUSED_CASES), run_case)
