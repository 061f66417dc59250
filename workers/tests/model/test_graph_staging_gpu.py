"""On the GPU: two same-bucket graph steps in a row, with nothing synced in between and the stream still busy with
earlier work (a long sleep kernel queued first), write the same KV cache and logits as the same steps with a full
sync after each. Decode graphs (two decode steps of one bucket; the staging copy's event, and in GRAPH_INPUT 2 the
event the graph records after its own kernel read the pinned buffer) and prefill graphs (two non-final chunks of one
prompt in one bucket). The same steps with the staging wait switched off must differ (the second step's inputs
overwrite the first's pinned buffer before the GPU copies it), so the check can fail.
The device path (execute_device) allocates no pinned host logits; the first execute (host path) allocates the
runner's one pinned host buffer [rows, vocab] (model.graph_logits), whose rows [:bucket] its graph then keeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.decode_graphs import Staging
from inlaid_worker.model.runner import ModelRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BS = 4
SLEEP_CYCLES = 400_000_000  # ~0.2 s at the H200's ~2 GHz: the steps' copies wait behind it


def _runner(tmp_path: Path) -> ModelRunner:
    return ModelRunner(make_tiny_llama(tmp_path / "m"), device="cuda", dtype=torch.float16, num_kv_blocks=64,
                       block_size=BS, backend="triton")  # fmt: skip


def _two_steps(runner: ModelRunner, steps: list, busy: bool, sync_between: bool) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[type-arg]
    """Runs the steps with execute_device from the same KV state; returns (last step's logits, KV cache)."""
    torch.cuda.synchronize()
    if busy:
        torch.cuda._sleep(SLEEP_CYCLES)
    out = None
    for step in steps:
        out = runner.execute_device(step)
        if sync_between:
            torch.cuda.synchronize()
    assert out is not None
    logits = out.clone()
    torch.cuda.synchronize()
    return logits.cpu(), runner.kv_cache.clone()


def _compare(runner: ModelRunner, steps: list, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    snap = runner.kv_cache.clone()

    def run(busy: bool, sync_between: bool) -> tuple[torch.Tensor, torch.Tensor]:
        runner.kv_cache.copy_(snap)
        return _two_steps(runner, steps, busy, sync_between)

    ref_logits, ref_kv = run(False, True)
    logits, kv = run(True, False)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(kv, ref_kv, rtol=1e-3, atol=1e-3)
    with monkeypatch.context() as m:  # the old runner without engine.settle: no wait before restaging
        m.setattr(Staging, "wait", lambda self: None)
        bad_logits, bad_kv = run(True, False)
    gap = float((bad_kv.float() - ref_kv.float()).abs().max())
    assert gap > 1e-2, f"without the staging wait the KV should differ (max gap {gap}): the race did not happen"
    runner.kv_cache.copy_(ref_kv)


def _pinned_logits(runner: ModelRunner) -> list[object]:
    graphs = list(runner._graphs._graphs.values()) if runner._graphs is not None else []  # type: ignore[union-attr]
    buckets = list(runner._prefill._buckets.values()) if runner._prefill is not None else []  # type: ignore[union-attr]
    return [x.host_logits for x in graphs + buckets]


@pytest.mark.parametrize("mode", [0, 2])  # decode_graphs GRAPH_INPUT: 0 the copy's event; 2 the graph's own
def test_same_bucket_decode_steps_on_a_busy_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int) -> None:
    monkeypatch.setenv("INLAID_GRAPH_INPUT", str(mode))  # (read when the runner's decode graphs are made)
    runner = _runner(tmp_path)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 300, (16,), generator=g).tolist() for _ in range(3)]
    tables = [list(range(i * 8, i * 8 + 8)) for i in range(3)]

    def decode(pos: int) -> object:
        return make_step([([s[pos]], pos, tables[i], -1) for i, s in enumerate(seqs)], BS)

    runner.execute_device(make_step([(s[:10], 0, tables[i], -1) for i, s in enumerate(seqs)], BS))
    runner.execute_device(decode(10))  # captures bucket 4 (a capture syncs)
    assert runner.graph_captures >= 1
    assert [k[4] for k in runner._graphs._graphs] == [mode]  # type: ignore[union-attr]
    _compare(runner, [decode(11), decode(12)], monkeypatch)
    assert all(h is None for h in _pinned_logits(runner)), "the device path allocated pinned host logits"
    runner.execute(decode(13))  # the host path: the shared pinned buffer, made now; bucket 4 keeps its rows [:4]
    made = [h for h in _pinned_logits(runner) if h is not None]
    assert len(made) == 1 and made[0].is_pinned() and made[0].shape[0] == 4  # type: ignore[attr-defined]
    whole = runner.graph_logits_rows * runner.weights.lm_head.shape[0] * 4  # [rows, vocab] float32, all of it
    assert runner._graph_logits.host_bytes == whole


def test_same_bucket_prefill_chunks_on_a_busy_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _runner(tmp_path)
    assert runner.prefill_graphs
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, 300, (40,), generator=g).tolist()
    other = torch.randint(3, 300, (8,), generator=g).tolist()
    table = list(range(0, 16))
    chunk: Callable[[int], object] = lambda start: make_step([(prompt[start : start + 12], start, table, -1)], BS)  # noqa: E731
    runner.execute_device(make_step([(other, 0, list(range(32, 40)), -1)], BS))  # captures the (16, 1) bucket
    assert runner.prefill_graph_stats["captures"] == 1
    _compare(runner, [chunk(0), chunk(12)], monkeypatch)  # two chunks of one prompt, the same bucket, no sampling
    assert runner.prefill_graph_stats["captures"] == 1
    assert all(h is None for h in _pinned_logits(runner))
    runner.execute(chunk(24))
    assert sum(h is not None for h in _pinned_logits(runner)) == 1
