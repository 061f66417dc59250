"""On CUDA, the decode graphs captured on first use of each bucket keep one float32 logits buffer per bucket
(engine/graph_reserve.py): after a decode step of every bucket on a triton runner (tiny model, 32000-token vocabulary,
no adapter rows) the graphs' logits storages are distinct and add up to decode_graph_logits_bytes (163 MiB), the
allocated device memory grew by about as much (within SLACK: staging buffers, the cuBLAS workspace a capture takes in
the graph pool, rounding), and replays allocate nothing more; the allocated and reserved growth (the pool's
activations beyond the buffers, which the start-up estimate does not count) is printed with -s. Skipped without
CUDA."""

from __future__ import annotations

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.engine.graph_reserve import decode_graph_logits_bytes
from inlaid_worker.model.decode_graphs import BUCKETS
from inlaid_worker.model.runner import ModelRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BS = 4
VOCAB = 32000
SLACK = 64 << 20  # staging buffers, a cuBLAS workspace in the graph pool, the allocator's rounding


def test_decode_graphs_keep_the_estimated_logits_buffers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = make_tiny_llama(tmp_path / "m", vocab=VOCAB)
    runner = ModelRunner(model, device="cuda", dtype=torch.float16, num_kv_blocks=512, block_size=BS, max_adapters=4,
                         backend="triton")  # fmt: skip
    assert runner.decode_fusion is not None

    def decode(n: int) -> None:
        runner.execute_device(make_step([([5 + i % 200], 3, [i], -1) for i in range(n)], BS))

    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    for b in BUCKETS:
        decode(b)
    torch.cuda.synchronize()
    assert runner.graph_captures == len(BUCKETS)
    grown = torch.cuda.memory_allocated() - allocated
    pool = torch.cuda.memory_reserved() - reserved
    want = decode_graph_logits_bytes(VOCAB, BUCKETS[-1], lora=False)
    graphs = runner._graphs._graphs.values()  # type: ignore[union-attr]  # read-only: the captured graphs
    storages = {g.logits.untyped_storage().data_ptr(): g.logits.untyped_storage().nbytes() for g in graphs}
    print(f"\ndecode graphs of {len(BUCKETS)} buckets: allocated +{grown / 2**20:.1f} MiB (logits buffers "
          f"{want / 2**20:.1f} MiB), reserved +{pool / 2**20:.1f} MiB")  # fmt: skip
    assert len(storages) == len(BUCKETS) and sum(storages.values()) == want
    assert want - SLACK <= grown <= want + SLACK, (grown, want)
    for b in BUCKETS:  # replays: nothing more
        decode(b)
    torch.cuda.synchronize()
    assert abs(torch.cuda.memory_allocated() - allocated - grown) <= 1 << 20
