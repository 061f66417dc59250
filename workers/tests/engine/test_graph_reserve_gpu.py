"""On CUDA, the decode graphs captured on first use of each bucket and the prefill graphs all write one float32 logits
buffer (model.graph_logits; engine/graph_reserve.py): after a decode step of every bucket and two prefill buckets on a
triton runner (tiny model, 32000-token vocabulary, no adapter rows) every graph's logits lie in one storage of
graph_logits_bytes (256 rows: 31.25 MiB), the allocated device memory grew by that plus at most two cuBLAS
workspaces (the warm-ups' one side stream, kernels/side_stream.py, and the capture stream; SLACK: staging buffers,
rounding), far below the 163 MiB that one buffer per decode bucket took before (and the 32 MiB cuBLAS workspace that a
new warm-up stream per graph left behind each time: +640 MiB here on the H200 before session 14's side_stream), and
replays allocate nothing more; the allocated and reserved growth (the pool's
activations beyond the buffer, which the start-up estimate does not count) is printed with -s. Skipped without
CUDA."""

from __future__ import annotations

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.engine.graph_reserve import graph_logits_bytes
from inlaid_worker.model.decode_graphs import BUCKETS
from inlaid_worker.model.runner import ModelRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BS = 4
VOCAB = 32000
CUBLAS_WS = 32 << 20  # PyTorch's default cuBLAS workspace per (handle, stream) on Hopper
SLACK = 16 << 20  # staging buffers, the allocator's rounding


def test_every_graph_writes_the_one_estimated_logits_buffer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_tiny_llama(tmp_path / "m", vocab=VOCAB)
    runner = ModelRunner(model, device="cuda", dtype=torch.float16, num_kv_blocks=512, block_size=BS, max_adapters=4,
                         backend="triton")  # fmt: skip
    assert runner.decode_fusion is not None and runner.prefill_graphs

    def decode(n: int) -> None:
        runner.execute_device(make_step([([5 + i % 200], 3, [i], -1) for i in range(n)], BS))

    def prefill(n: int) -> None:  # n prompts of 3 tokens: bucket (16, n)
        runner.execute_device(make_step([([5, 6, 7], 0, [300 + i], -1) for i in range(n)], BS))

    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    for b in BUCKETS:
        decode(b)
    for n in (1, 4):
        prefill(n)
    torch.cuda.synchronize()
    assert runner.graph_captures == len(BUCKETS) and runner.prefill_graph_stats["captures"] == 2
    grown = torch.cuda.memory_allocated() - allocated
    pool = torch.cuda.memory_reserved() - reserved
    want = graph_logits_bytes(runner, VOCAB)
    before = sum(BUCKETS) * VOCAB * 4  # one [bucket, vocab] float32 buffer per decode graph (before session 14)
    graphs = list(runner._graphs._graphs.values())  # type: ignore[union-attr]  # read-only: the captured graphs
    buckets = list(runner._prefill._buckets.values())  # type: ignore[union-attr]
    outs = [g.logits for g in graphs] + [b.logits for b in buckets]
    storages = {x.untyped_storage().data_ptr(): x.untyped_storage().nbytes() for x in outs}  # type: ignore[union-attr]
    print(f"\n{len(graphs)} decode + {len(buckets)} prefill graphs: allocated +{grown / 2**20:.1f} MiB (shared logits "
          f"{want / 2**20:.2f} MiB; one buffer per decode bucket was {before / 2**20:.1f} MiB), reserved "
          f"+{pool / 2**20:.1f} MiB")  # fmt: skip
    assert want == 256 * VOCAB * 4 and len(storages) == 1 and sum(storages.values()) == want
    assert want <= grown <= want + 2 * CUBLAS_WS + SLACK, (grown, want)  # one warm-up stream, one capture stream
    assert grown + SLACK < before, (grown, before)  # far less than one buffer per bucket
    for b in BUCKETS:  # replays: nothing more
        decode(b)
    prefill(4)
    torch.cuda.synchronize()
    assert abs(torch.cuda.memory_allocated() - allocated - grown) <= 1 << 20
