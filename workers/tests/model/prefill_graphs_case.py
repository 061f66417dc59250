"""Prefill and mixed steps through model.prefill_graphs vs the runner's eager step and the torch backend, on the
tiny model with two adapters: chunks longer than a tile, chunks after cached context, decode rows sharing a step
with chunks, base-only and LoRA steps, a bucket reused with another layout. Prints one JSON line.

On the CPU (TRITON_INTERPRET=1, fp32) the padded static-buffer step runs eagerly (the graph-less twin); on CUDA
(fp16) it is captured and replayed. Run as a script (see test_prefill_graphs.py)."""

from __future__ import annotations

import json
import os
import sys

import torch

BS = 4
SPARE = range(60, 64)  # KV blocks no step names: padding rows must leave them untouched


def run(model_dir: str, device: str) -> dict[str, object]:
    from factories import make_lora_adapter, make_step
    from inlaid_worker.model.runner import ModelRunner

    dtype = torch.float32 if device == "cpu" else torch.float16
    kw = dict(device=device, dtype=dtype, num_kv_blocks=64, block_size=BS, max_adapters=4)
    runners = {"padded": ModelRunner(model_dir, backend="triton", prefill_graphs=True, **kw),
               "eager": ModelRunner(model_dir, backend="triton", prefill_graphs=False, **kw),
               "torch": ModelRunner(model_dir, backend="torch", **kw)}  # fmt: skip
    shapes = [(4, ("q_proj", "v_proj", "gate_proj")), (8, ("o_proj", "down_proj", "k_proj"))]
    for i, (rank, targets) in enumerate(shapes):
        adapter = make_lora_adapter(runners["torch"].config, rank=rank, targets=targets, seed=i + 1)
        for r in runners.values():
            r.add_adapter(f"a{i}", adapter)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 300, (48,), generator=g).tolist() for _ in range(5)]
    tables = [list(range(i * 12, i * 12 + 12)) for i in range(5)]
    ids = [0, -1, 1, 0, -1]

    def chunk(s: int, start: int, end: int, lora: bool = True) -> tuple:
        return (seqs[s][start:end], start, tables[s], ids[s] if lora else -1)

    steps = [
        [chunk(0, 0, 40), chunk(1, 0, 10)],  # 40 rows: two tiles; LoRA and base rows
        [chunk(0, 40, 41), chunk(1, 10, 11), chunk(2, 0, 12), chunk(3, 0, 5)],  # decode rows + two chunks
        [chunk(2, 12, 20), chunk(0, 41, 42), chunk(3, 5, 11), chunk(1, 11, 12)],  # chunks after cached context
        [chunk(4, 0, 7)],  # base only (the no-LoRA bucket)
        [chunk(0, 42, 43), chunk(1, 12, 13), chunk(2, 20, 21), chunk(3, 11, 12)],  # pure decode: not this path
        [chunk(3, 12, 13), chunk(4, 7, 30, lora=False), chunk(2, 21, 22)],  # bucket of step 2, other layout
        [chunk(4, 30, 44), chunk(0, 43, 44, lora=False)],  # adapters off for a sequence that had one
    ]
    errs: dict[str, list[float]] = {"padded": [], "eager": []}
    gaps = []
    for i in range(len(steps) + 1):
        if i == len(steps):  # a rank-16 adapter grows the q_proj pools (new layout: LoRA graphs are dropped)
            big = make_lora_adapter(runners["torch"].config, rank=16, targets=("q_proj", "up_proj"), seed=9)
            slot = {r.add_adapter("a2", big) for r in runners.values()}.pop()
            steps.append([(seqs[4][44:46], 44, tables[4], slot), chunk(2, 22, 23), chunk(0, 44, 45)])
        chunks = steps[i]
        ref = runners["torch"].execute(make_step(chunks, BS)).clone()
        out = {name: runners[name].execute(make_step(chunks, BS)).clone() for name in errs}
        for name in errs:
            errs[name].append(float((out[name] - ref).norm() / ref.norm()))
        gaps.append(float((out["padded"] - out["eager"]).norm() / out["eager"].norm()))
    kv = {name: runners[name].kv_cache.float().clone() for name in errs}
    # how much the adapters move the logits (after the comparisons: this rewrites step 3's KV without LoRA)
    on = runners["torch"].execute(make_step(steps[2], BS)).clone()
    off = runners["torch"].execute(make_step([(*c[:3], -1) for c in steps[2]], BS))
    used = [b for t in tables for b in t]
    return dict(
        errors=errs, padded_vs_eager=gaps, stats=runners["padded"].prefill_graph_stats,
        eager_stats=runners["eager"].prefill_graph_stats,
        kv_gap=float((kv["padded"][:, :, used] - kv["eager"][:, :, used]).abs().max()),
        spare_untouched=bool((kv["padded"][:, :, list(SPARE)] == 0).all()),
        adapter_effect=float((on - off).norm() / on.norm()),
    )  # fmt: skip


def kernel_error(device: str) -> float:
    """kernels.paged_prefill vs model.attention's reference on random paged KV (grouped-query heads, contexts over
    several key blocks, a decode row, a chunk after cached context, padding tiles): the max relative row error;
    rows no tile covers must be exactly zero (returned as inf otherwise)."""
    dtype = torch.float32 if device == "cpu" else torch.float16
    err, pad_zero, _ = kernel_rows(device, dtype, 4, 2, 32, torch.Generator().manual_seed(3))
    return err if pad_zero else float("inf")


def kernel_rows(device: str, dtype: torch.dtype, heads: int, kv_heads: int, d: int,
                g: torch.Generator) -> tuple[float, bool, torch.dtype]:  # fmt: skip
    """kernel_error's case at any dtype and head shape (also kernels/test_cpu_cov_paged_prefill.py): the max relative
    row error against the reference, whether the rows no tile covers are exactly zero, and the output's dtype."""
    from inlaid_worker.kernels.paged_prefill import paged_prefill
    from inlaid_worker.model.attention import AttentionMetadata, paged_attention_reference
    from inlaid_worker.model.prefill_layout import plan_tiles

    blocks = 200
    k_cache = torch.randn(blocks, BS, kv_heads, d, generator=g).to(device, dtype)
    v_cache = torch.randn(blocks, BS, kv_heads, d, generator=g).to(device, dtype)
    qlen, ctx = [1, 70, 9, 33], [150, 70, 40, 33]  # decode row; whole prompt; chunk after 31 cached; 33 = 32 + 1
    perm = torch.randperm(blocks, generator=g)
    tables = torch.stack([perm[i * 40 : (i + 1) * 40] for i in range(4)])
    qsl = [0, *torch.tensor(qlen).cumsum(0).tolist()]
    t = qsl[-1] + 5  # 5 padding rows
    q = torch.randn(t, heads, d, generator=g).to(device, dtype)
    tiles = plan_tiles(torch.tensor(qsl).numpy(), torch.tensor(ctx).numpy())
    table = torch.zeros(4, tiles.shape[1] + 3, dtype=torch.int32)  # 3 padding tiles
    table[:, : tiles.shape[1]] = torch.from_numpy(tiles)
    out = paged_prefill(q, k_cache, v_cache, tables.to(device, torch.int32), table.to(device), d**-0.5)
    meta = AttentionMetadata.build(torch.zeros(qsl[-1], dtype=torch.int64, device=device), qsl, ctx,
                                   tables.to(device), BS)  # fmt: skip
    ref = paged_attention_reference(q[: qsl[-1]].float(), k_cache.float(), v_cache.float(), meta, d**-0.5)
    err = (out[: qsl[-1]].float() - ref).norm(dim=-1) / ref.norm(dim=-1)
    return float(err.max()), not bool(out[qsl[-1] :].any()), out.dtype


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        from cases import _patch_interpreter_for_numpy  # tests/kernels/cases.py

        _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    print(json.dumps(dict(run(sys.argv[1], sys.argv[2]), kernel_error=kernel_error(sys.argv[2]))))


if __name__ == "__main__":
    main()
