"""On the GPU, the CUDA graphs' one shared logits buffer (model.graph_logits): two decode buckets and a prefill bucket,
captured and replayed, all write rows of one device storage (the runner's GraphLogits, outside the graphs' pool), give
the logits of the same steps run eagerly (cuda_graphs=False) and of the torch reference, and a step's view is
overwritten by the next replay of another graph (the documented validity); host steps (execute) of two graphs return
rows of one pinned buffer. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.runner import ModelRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BS = 4


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm())


def test_two_decode_buckets_and_a_prefill_bucket_write_one_buffer(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "m")
    kw = dict(device="cuda", dtype=torch.float16, num_kv_blocks=64, block_size=BS, max_adapters=4)
    runners = {"graph": ModelRunner(model, backend="triton", **kw),
               "eager": ModelRunner(model, backend="triton", cuda_graphs=False, **kw),
               "torch": ModelRunner(model, backend="torch", **kw)}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 300, (24,), generator=g).tolist() for _ in range(4)]
    tables = [list(range(i * 8, i * 8 + 8)) for i in range(4)]
    steps = [
        [(s[:10], 0, tables[i], -1) for i, s in enumerate(seqs[:3])],  # prefill: bucket (32, 4), a graph
        [([s[10]], 10, tables[i], -1) for i, s in enumerate(seqs[:3])],  # decode bucket 4
        [([seqs[0][11]], 11, tables[0], -1)],  # decode bucket 1
        [([s[11]], 11, tables[i], -1) for i, s in enumerate(seqs[1:3], 1)] + [(seqs[3][:5], 0, tables[3], -1)],
        [([s[12]], 12, tables[i], -1) for i, s in enumerate(seqs[:3])],  # decode bucket 4 again: a replay
        [([seqs[0][13]], 13, tables[0], -1)],  # decode bucket 1 again
    ]
    gaps, errs = [], []
    shared = runners["graph"]._graph_logits
    for chunks in steps:
        ref = runners["torch"].execute_device(make_step(chunks, BS)).clone()
        eager = runners["eager"].execute_device(make_step(chunks, BS)).clone()
        out = runners["graph"].execute_device(make_step(chunks, BS))
        assert out.data_ptr() == shared.out(1, out.shape[1]).data_ptr(), "graph logits outside the shared buffer"
        gaps.append(_rel(out, eager))
        errs.append(_rel(out, ref))
    r = runners["graph"]
    assert r.graph_captures == 2 and r.prefill_graph_stats["captures"] == 2, (r.graph_captures, r.prefill_graph_stats)
    assert max(gaps) < 5e-3, f"graph vs eager: {gaps}"
    assert max(errs) < 2e-2, f"graph vs torch reference: {errs}"
    graphs = list(r._graphs._graphs.values())  # type: ignore[union-attr]  # read-only
    buckets = list(r._prefill._buckets.values())  # type: ignore[union-attr]
    ptrs = {x.logits.untyped_storage().data_ptr() for x in graphs + buckets}  # type: ignore[union-attr,operator]
    assert ptrs == {shared.out(1, 320).untyped_storage().data_ptr()} and shared.device_bytes == 256 * 320 * 4
    # a step's view is valid until the next replay of any graph: bucket 1 overwrites bucket 4's first row
    four = r.execute_device(make_step([([s[13]], 13, tables[i], -1) for i, s in enumerate(seqs[1:4], 1)], BS))
    kept = four.clone()
    one = r.execute_device(make_step([([seqs[0][14]], 14, tables[0], -1)], BS))
    torch.cuda.synchronize()
    assert torch.equal(four[0], one[0]) and not torch.equal(four[0], kept[0])
    # host steps: rows of one pinned buffer
    h4 = r.execute(make_step([([s[15]], 15, tables[i], -1) for i, s in enumerate(seqs[1:4], 1)], BS))
    h1 = r.execute(make_step([([seqs[0][15]], 15, tables[0], -1)], BS))
    assert h4.is_pinned() and h1.is_pinned() and h4.data_ptr() == h1.data_ptr()


def test_a_runner_for_few_sequences_keeps_a_small_buffer(tmp_path: Path) -> None:
    """max_num_seqs=4 (the factory passes the engine's): 4 rows; a step of more sequences runs eagerly."""
    r = ModelRunner(make_tiny_llama(tmp_path / "m"), device="cuda", dtype=torch.float16, num_kv_blocks=64,
                    block_size=BS, backend="triton", max_num_seqs=4)  # fmt: skip
    assert r.graph_logits_rows == 4
    tables = [list(range(i * 4, i * 4 + 4)) for i in range(8)]
    prefill = r.execute_device(make_step([([5, 6, 7], 0, tables[i], -1) for i in range(2)], BS))  # (16, 2): a graph
    assert prefill.shape == (2, 320) and r.prefill_graph_stats["captures"] == 1
    r.execute_device(make_step([([5, 6, 7], 0, tables[i], -1) for i in range(2, 8)], BS))  # SB 8 > 4 rows: eager
    assert r.prefill_graph_stats["captures"] == 1
    r.execute_device(make_step([([9], 3, tables[i], -1) for i in range(3)], BS))  # decode bucket 4: a graph
    assert r.graph_captures == 1
    eager = r.execute_device(make_step([([9], 4, tables[i], -1) for i in range(6)], BS))  # 6 rows: eager
    assert eager.shape == (6, 320) and r.graph_captures == 1
    assert r._graph_logits.device_bytes == 4 * 320 * 4
