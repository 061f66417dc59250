"""Decode attention of one layer, per decode fusion (llama_fast.DECODE_FUSIONS), timed alone on the GPU.

Per batch, on the Llama-2-7B attention shape (32 heads, 32 KV heads, head_dim 128, block 16) with `--context`
cached tokens per sequence, from the fused QKV output to the attention output:
  none:  rope_cache.rope_and_cache + paged_decode (+ its merge kernel when the context is split)
  merge: rope_cache.rope_and_cache + decode_fused.decode_attention (merge inside the kernel)
  rope:  decode_fused.rope_decode_attention (one kernel; cos/sin in the kernel; "none" also pays cos_sin's
         torch kernels once per step, not counted here)
  rope-vec: rope with vec_mha (CUDA-core scores for one query head per KV head)
Time = one CUDA graph of `--layers` layers (each its own KV cache, so nothing stays in L2), replayed by
triton.testing.do_bench_cudagraph, divided by the layers: the per-layer cost inside a captured decode step,
launch gaps included. Also checks each variant's output against "none" (relative error norm, real shapes), and
sweeps the partition count of the fused variants (--parts-sweep, --sweep-variants). Writes <out>/attention-<date>[-tag].json.
  PYTHONPATH=workers python3 bench/engine/bench_attention.py --out DIR --batches 1,16,32
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import triton
import triton.language as tl
from inlaid_worker.kernels.decode_fused import choose_fused_parts, decode_attention, rope_decode_attention
from inlaid_worker.kernels.paged_decode import choose_num_parts, paged_decode
from inlaid_worker.kernels.rope_cache import rope_and_cache
from inlaid_worker.model.rope import cos_sin

HEADS, KV_HEADS, D, BLOCK = 32, 32, 128, 16


@triton.jit
def _tiny_kernel(x_ptr):
    tl.store(x_ptr + tl.program_id(0), tl.load(x_ptr + tl.program_id(0)) + 1.0)


def launch_floor_us(dev: torch.device, n: int = 256) -> float:
    """Per-kernel time of n dependent one-program kernels in one CUDA graph: what every extra launch in a
    captured decode step costs at least (the kernel-count floor)."""
    x = torch.zeros(1, device=dev)
    return per_layer_us(lambda _layer, _parts: _tiny_kernel[(1,)](x), n, 1)


def variants(
    b: int, ctx: int, layers: int, dev: torch.device
) -> tuple[dict[str, Callable[[int, int], torch.Tensor]], dict[str, int]]:
    """{fusion: fn(layer, parts) -> attention output [b, heads, D]} over shared inputs; and each one's default
    partition count (the engine's: paged_decode's rule for "none", decode_fused's for the fused ones)."""
    g = torch.Generator(device=dev).manual_seed(0)
    per_seq = -(-ctx // BLOCK)
    kv = torch.empty(layers, 2, b * per_seq, BLOCK, KV_HEADS, D, device=dev, dtype=torch.float16)
    kv.normal_(0, 1, generator=g)
    qkv = torch.randn(b, (HEADS + 2 * KV_HEADS) * D, device=dev, generator=g).half()
    tables = torch.arange(b * per_seq, device=dev, dtype=torch.int32).reshape(b, per_seq)
    lens = torch.full((b,), ctx, device=dev, dtype=torch.int32)
    pos = lens - 1
    slots = (tables[:, -1] * BLOCK + (ctx - 1) % BLOCK).to(torch.int32)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
    cos, sin = cos_sin(inv_freq, pos, torch.float16)
    scale = D**-0.5

    def none(layer: int, parts: int) -> torch.Tensor:
        q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, kv[layer, 0], kv[layer, 1], HEADS)
        return paged_decode(q, kv[layer, 0], kv[layer, 1], tables, lens, scale, parts)

    def merge(layer: int, parts: int) -> torch.Tensor:
        q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, kv[layer, 0], kv[layer, 1], HEADS)
        return decode_attention(q, kv[layer, 0], kv[layer, 1], tables, lens, scale, parts)

    def rope(layer: int, parts: int, vec: bool = False) -> torch.Tensor:
        return rope_decode_attention(qkv, pos, inv_freq, slots, kv[layer, 0], kv[layer, 1], tables, lens, scale,
                                     HEADS, parts, vec_mha=vec)  # fmt: skip

    def rope_vec(layer: int, parts: int) -> torch.Tensor:
        return rope(layer, parts, True)

    def cache_write_err(parts: int) -> float:
        """Clear the new tokens' cache slots of layer 0, run "rope", compare them with what "none" wrote."""
        blk, within = slots.long() // BLOCK, slots.long() % BLOCK
        none(0, parts)
        want = kv[0][:, blk, within].clone()
        kv[0][:, blk, within] = 0
        rope(0, parts)
        return float((kv[0][:, blk, within].float() - want.float()).norm() / want.float().norm())

    fused = choose_fused_parts(b, KV_HEADS, dev)
    parts = dict(none=choose_num_parts(b, KV_HEADS, dev), merge=fused, rope=fused, cache_write_err=fused)
    parts["rope-vec"] = fused
    fns = {"none": none, "merge": merge, "rope": rope, "rope-vec": rope_vec, "cache_write_err": cache_write_err}
    return fns, parts


def per_layer_us(fn: Callable[[int, int], torch.Tensor], layers: int, parts: int) -> float:
    def step() -> None:
        for layer in range(layers):
            fn(layer, parts)

    step()  # compile + tune outside the capture
    torch.cuda.synchronize()
    ms = triton.testing.do_bench_cudagraph(step, rep=100)  # ms of replays per measurement
    return ms * 1e3 / layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,16,32")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument(
        "--parts-sweep", default="1:4,16,32;16:2", help="batch:parts,...;... more partition counts (--sweep-variants)"
    )
    ap.add_argument("--sweep-variants", default="rope,rope-vec", help="variants the partition sweep times")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    dev = torch.device("cuda")
    date = dt.date.today().isoformat()
    sweep = {
        int(k): [int(p) for p in v.split(",")] for k, v in (x.split(":") for x in args.parts_sweep.split(";") if x)
    }
    meta = dict(date=date, command="PYTHONPATH=workers python3 " + " ".join(sys.argv), device=torch.cuda.get_device_name(dev),
                torch=torch.__version__, triton=triton.__version__, context=args.context, layers=args.layers,
                shape=dict(heads=HEADS, kv_heads=KV_HEADS, head_dim=D, block=BLOCK))  # fmt: skip
    rows: list[dict] = []
    out = args.out / f"attention-{date}{'-' + args.tag if args.tag else ''}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    rows.append(dict(check="one-program kernel in a CUDA graph", us_per_kernel=launch_floor_us(dev)))
    print(json.dumps(rows[-1]), flush=True)
    for b in (int(v) for v in args.batches.split(",")):
        fns, parts = variants(b, args.context, args.layers, dev)
        kv_bytes = b * args.context * 2 * KV_HEADS * D * 2
        ref = fns["none"](0, parts["none"]).float()
        write_err = fns.pop("cache_write_err")(parts["rope"])
        rows.append(dict(batch=b, check="rope KV write vs none", rel_err=write_err))
        print(json.dumps(rows[-1]), flush=True)
        for name, fn in fns.items():
            err = float((fn(0, parts[name]).float() - ref).norm() / ref.norm())
            us = per_layer_us(fn, args.layers, parts[name])
            rows.append(dict(batch=b, fusion=name, parts=parts[name], us_per_layer=us, rel_err_vs_none=err,
                             kv_GBps=kv_bytes / us / 1e3))  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        for name in args.sweep_variants.split(","):
            for p in sweep.get(b, []):
                if p != parts[name]:
                    us = per_layer_us(fns[name], args.layers, p)
                    rows.append(dict(batch=b, fusion=name, parts=p, us_per_layer=us, kv_GBps=kv_bytes / us / 1e3))
                    print(json.dumps(rows[-1]), flush=True)
                    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        del fns
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
