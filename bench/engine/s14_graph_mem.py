"""Session 14 diagnostic: where the device memory a triton runner's CUDA graphs take goes (tiny model, 32000-token
vocabulary, decode graphs of every bucket and two prefill graphs, as workers/tests/engine/test_graph_reserve_gpu.py).
Prints the allocated growth after each phase and the live allocated blocks >= 1 MiB grouped by size (with the
allocation stack's top frames where the allocator records them), then whether replays allocate more.
Usage (device): PYTHONPATH=workers:workers/tests python3 bench/engine/s14_graph_mem.py
"""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.decode_graphs import BUCKETS
from inlaid_worker.model.runner import ModelRunner

BS, VOCAB, MIB = 4, 32000, 2**20


def live_blocks() -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for seg in torch.cuda.memory_snapshot():
        for blk in seg["blocks"]:
            if blk["state"] == "active_allocated" and blk["size"] >= MIB:
                frames = blk.get("frames") or []
                where = " < ".join(f"{Path(f['filename']).name}:{f['line']}:{f['name']}" for f in frames
                                   if "inlaid" in f["filename"] or "bench" in f["filename"])[:300]
                out[(seg.get("segment_pool_id"), blk["size"], where)] += 1
    return out


def main() -> None:
    torch.cuda.memory._record_memory_history(max_entries=200000)
    model = make_tiny_llama(Path(tempfile.mkdtemp()) / "m", vocab=VOCAB)
    runner = ModelRunner(model, device="cuda", dtype=torch.float16, num_kv_blocks=512, block_size=BS, max_adapters=4,
                         backend="triton")  # fmt: skip

    def decode(n: int) -> None:
        runner.execute_device(make_step([([5 + i % 200], 3, [i], -1) for i in range(n)], BS))

    def prefill(n: int) -> None:
        runner.execute_device(make_step([([5, 6, 7], 0, [300 + i], -1) for i in range(n)], BS))

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    before = live_blocks()
    for b in BUCKETS:
        decode(b)
        torch.cuda.synchronize()
        print(f"decode bucket {b}: allocated +{(torch.cuda.memory_allocated() - base) / MIB:.1f} MiB", flush=True)
    for n in (1, 4):
        prefill(n)
    torch.cuda.synchronize()
    grown = torch.cuda.memory_allocated() - base
    print(f"after 2 prefill graphs: allocated +{grown / MIB:.1f} MiB", flush=True)
    after = live_blocks()
    new = after - before
    print("live blocks >= 1 MiB that appeared (pool, size MiB, count, where):")
    for (pool, size, where), count in sorted(new.items(), key=lambda kv: -kv[0][1] * kv[1]):
        print(f"  pool {pool} {size / MIB:8.2f} MiB x {count}  {where}")
    for b in BUCKETS:
        decode(b)
    prefill(4)
    torch.cuda.synchronize()
    print(f"after replays: allocated +{(torch.cuda.memory_allocated() - base) / MIB:.1f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
