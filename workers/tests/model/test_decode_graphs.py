"""CUDA graphs for decode steps (model.decode_graphs): on the GPU, a triton runner that replays graphs gives the
logits of the same runner run eagerly and of the torch reference backend, over several buckets, padding rows,
adapters entering and leaving, and a prefill in between (which must not disturb the captured graphs).
Skipped without CUDA (graphs need a GPU; the fused kernels' CPU checks are in tests/kernels)."""

from __future__ import annotations

import pytest
import torch
from factories import make_lora_adapter, make_step, make_tiny_llama
from inlaid_worker.model.decode_graphs import bucket_for, is_pure_decode, stage_step
from inlaid_worker.model.runner import ModelRunner

BS = 4


def test_buckets_and_decode_detection() -> None:
    assert [bucket_for(n) for n in (1, 3, 17, 256)] == [1, 4, 24, 256]
    assert bucket_for(257) is None
    decode = make_step([([5], 3, [0, 1], -1), ([6], 7, [2, 3], 0)], BS)
    prefill = make_step([([5, 6], 0, [0], -1)], BS)
    assert is_pure_decode(decode) and not is_pure_decode(prefill)


def test_staging_buffer_layout_and_padding_rows() -> None:
    step = make_step([([5], 3, [4, 1], -1), ([6], 7, [2, 3], 2), ([9], 2, [8], 0)], BS)
    host = torch.full((4 * (6 + 5),), 77, dtype=torch.int32)
    stage_step(host, 4, 5, step)
    f = host[:24].view(6, 4)
    assert f.tolist() == [[5, 6, 9, 0], [3, 7, 2, 0], [4 * BS + 3, 3 * BS + 3, 8 * BS + 2, -1], [4, 8, 3, 0],
                          [0, 2, 0, 0], [0, 1, 1, 0]]  # fmt: skip
    assert host[24:].view(4, 5)[:3, :2].tolist() == [[4, 1], [2, 3], [8, 0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_replay_matches_eager_and_reference(tmp_path) -> None:
    model = make_tiny_llama(tmp_path / "m")
    kw = dict(device="cuda", dtype=torch.float16, num_kv_blocks=64, block_size=BS, max_adapters=4)
    runners = {"graph": ModelRunner(model, backend="triton", **kw),
               "eager": ModelRunner(model, backend="triton", cuda_graphs=False, **kw),
               "torch": ModelRunner(model, backend="torch", **kw)}  # fmt: skip
    for i, (rank, targets) in enumerate([(4, ("q_proj", "v_proj")), (8, ("o_proj", "down_proj", "k_proj"))]):
        adapter = make_lora_adapter(runners["torch"].config, rank=rank, targets=targets, seed=i + 1)
        for r in runners.values():
            r.add_adapter(f"a{i}", adapter)
    g = torch.Generator().manual_seed(0)
    n = 5
    seqs = [torch.randint(3, 300, (30,), generator=g).tolist() for _ in range(n)]
    tables = [list(range(i * 12, i * 12 + 12)) for i in range(n)]
    ids = [0, -1, 1, 0, 1]
    errs = {"graph": [], "eager": []}

    def step(chunks):  # type: ignore[no-untyped-def]
        ref = runners["torch"].execute(make_step(chunks, BS))
        for name in errs:
            errs[name].append(float((runners[name].execute(make_step(chunks, BS)) - ref).norm() / ref.norm()))

    step([(s[:10], 0, tables[i], ids[i]) for i, s in enumerate(seqs)])  # prefill (eager in every runner)
    for pos in range(10, 16):  # decode: 5, 3 (padded to bucket 4), 1 sequence, adapters on and off
        live = range(n) if pos < 12 else range(3) if pos < 14 else range(1)
        lora = pos % 3 != 2
        step([([seqs[i][pos]], pos, tables[i], ids[i] if lora else -1) for i in live])
    step([(seqs[4][12:20], 12, tables[4], 1)])  # a prefill chunk between graph replays
    step([([seqs[0][16]], 16, tables[0], 0), ([seqs[4][20]], 20, tables[4], 1)])
    captures = (runners["graph"].graph_captures, runners["eager"].graph_captures)
    assert captures[0] >= 4 and captures[1] == 0, f"graph captures (graph runner, eager runner): {captures}"
    assert max(errs["eager"]) < 2e-2, f"eager fast path vs torch reference: {errs}"
    assert max(errs["graph"]) < 2e-2, f"graph replay vs torch reference: {errs}"
    gap = [abs(a - b) for a, b in zip(errs["graph"], errs["eager"], strict=True)]
    assert max(gap) < 5e-3, f"graph vs eager: {errs}"  # the graph replays the eager fast path's kernels
