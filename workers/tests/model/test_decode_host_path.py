"""The decode graphs' host path (session 10: fewer host microseconds a step, bench/results/decode-2026-11-30-s10-host.md)
keeps its checks, on the CPU with fake graphs and events:
- the staging fill's two branches (host lists up to LIST_ROWS rows, numpy views above) write the same bytes;
- a block table that changes width between steps of one bucket is staged column by column as given;
- the LoRA test reads the host ids: a graph with LoRA exactly when some row has an adapter;
- steps the graphs cannot take (a block table wider than the graphs', more rows than the largest bucket, a prefill
  row, no rows) are refused by can_run and run eagerly;
- the runner still checks every step before staging it (a KV slot past the cache, an unloaded adapter slot, a
  query_start_loc that does not end at the token count), through max_int / last_int, which agree with torch;
- the staging event is recorded on the current stream, also after the current stream changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import make_lora_adapter, make_step, make_tiny_llama
from fake_cuda import logged_graphs
from inlaid_worker.model import decode_graphs
from inlaid_worker.model.decode_graphs import DecodeGraphs, Staging, _Graph, stage_step, stage_views
from inlaid_worker.model.runner import ModelRunner
from inlaid_worker.model.step_input import SHORT, StepInput, last_int, max_int

BS = 4
WIDTH = 8  # the graphs' block-table columns
VOCAB = 320


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stagings, event records and replays in order (no CUDA)."""
    return logged_graphs(monkeypatch)


def _fake_capture(g: DecodeGraphs, vocab: int) -> None:
    def capture(weights: Any, graph: _Graph, b: int, with_lora: bool, fusion: str) -> _Graph:
        g.captures += 1
        return _Graph(graph.graph, graph.staging, torch.full((b, vocab), float(b)), (), views=graph.views)

    g._capture = capture  # type: ignore[method-assign]


def _runner(tmp_path: Path, log: list[str]) -> ModelRunner:
    """A CPU triton-backend runner whose decode steps go through DecodeGraphs with fake graphs (as on CUDA) and
    whose eager steps log "eager" and return zero logits (Triton's kernels need a GPU or its interpreter)."""
    runner = ModelRunner(make_tiny_llama(tmp_path / "m"), "cpu", torch.float32, num_kv_blocks=16, block_size=BS,
                         max_adapters=4, backend="triton")  # fmt: skip
    assert runner._graphs is None  # no graphs on the CPU: attach fake ones
    dg = DecodeGraphs(runner.config, runner.kv_cache, runner._inv_freq, torch.float32, WIDTH, runner._adapters.pools,
                      buckets=(1, 2, 4), pdl_mode=0)  # fmt: skip
    _fake_capture(dg, runner.config.vocab_size)
    runner._graphs = dg
    runner.eager_inputs = lambda step: step  # type: ignore[method-assign,assignment,return-value]
    runner.eager_logits = lambda step: (log.append("eager"), torch.zeros(step.num_seqs, VOCAB))[1]  # type: ignore[method-assign,attr-defined]
    return runner


def _decode(ids: list[int], pos: int = 5, tables: list[list[int]] | None = None) -> Any:
    tables = tables or [[2 * i, 2 * i + 1] for i in range(len(ids))]
    return make_step([([3 + i], pos, tables[i], a) for i, a in enumerate(ids)], BS)


def _random_step(rng: np.random.Generator, s: int, w: int) -> Any:
    chunks = []
    for _ in range(s):
        table = [int(x) for x in rng.integers(0, 64, w)]
        pos = int(rng.integers(0, w * BS))
        chunks.append(([int(rng.integers(3, 300))], pos, table, int(rng.choice([-1, -1, 0, 1, 3]))))
    return make_step(chunks, BS)


@pytest.mark.parametrize("b", [1, 4, 16, 24])
def test_the_fill_branches_write_the_same_bytes(b: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(b)
    for s in sorted({1, max(1, b // 2), b}):
        step = _random_step(rng, s, int(rng.integers(1, WIDTH + 1)))
        bufs = []
        for rows in (10**6, 0):  # every step through the lists, then through the numpy views
            monkeypatch.setattr(decode_graphs, "LIST_ROWS", rows)
            host = torch.full((b * (6 + WIDTH),), 77, dtype=torch.int32)
            stage_step(host, b, WIDTH, step)
            bufs.append(host)
        assert torch.equal(bufs[0], bufs[1])
        f = bufs[0][: 6 * b].view(6, b)
        ids = step.adapter_ids
        assert f[4, :s].tolist() == ids.clamp_min(0).tolist() and f[5, :s].tolist() == (ids >= 0).int().tolist()
        assert f[2, s:].tolist() == [-1] * (b - s) and f[0, s:].tolist() == [0] * (b - s)


def test_given_views_and_ids_stage_what_the_step_says() -> None:
    step = _decode([-1, 2, 0])
    host = torch.full((4 * (6 + WIDTH),), 77, dtype=torch.int32)
    ref = host.clone()
    stage_step(ref, 4, WIDTH, step)
    stage_step(host, 4, WIDTH, step, stage_views(host, 4, WIDTH), step.adapter_ids.tolist())
    assert torch.equal(host, ref)


def test_a_block_table_changing_width_is_staged_as_given(tmp_path: Path, log: list[str]) -> None:
    runner = _runner(tmp_path, log)
    dg = runner._graphs
    assert dg is not None
    for tables in ([[5, 6, 7]], [[9]], [[1, 2, 3, 4, 5, 6, 7, 8]]):
        step = _decode([-1], pos=1, tables=tables)
        assert dg.can_run(step)
        runner.execute_device(step)
        (g,) = dg._graphs.values()
        w = len(tables[0])
        assert g.staging.dev[6 : 6 + w].tolist() == tables[0]
    assert dg.captures == 1 and log.count("replay") == 3


def test_steps_the_graphs_cannot_take_are_refused_and_run_eagerly(tmp_path: Path, log: list[str]) -> None:
    runner = _runner(tmp_path, log)
    dg = runner._graphs
    assert dg is not None
    wide = _decode([-1], tables=[list(range(WIDTH + 1))])  # wider than the graphs' table
    many = _decode([-1] * 5, pos=0)  # more rows than the largest bucket (4)
    prefill = make_step([([3, 4, 5], 0, [0], -1)], BS)
    empty = StepInput(*(torch.zeros(0, dtype=torch.int64),) * 4, torch.zeros(1, dtype=torch.int64),
                      torch.zeros(0, dtype=torch.int64), torch.zeros(0, 1, dtype=torch.int64),
                      torch.zeros(0, dtype=torch.int64))  # fmt: skip
    assert not any(dg.can_run(s) for s in (wide, many, prefill, empty))
    assert dg.can_run(_decode([-1] * 4))
    for step in (wide, many, prefill):
        assert runner.execute_device(step).shape == (step.num_seqs, VOCAB)
    assert log == ["eager"] * 3 and dg.captures == 0  # nothing staged, captured or replayed


def test_the_lora_test_reads_the_host_ids(tmp_path: Path, log: list[str]) -> None:
    runner = _runner(tmp_path, log)
    dg = runner._graphs
    assert dg is not None
    slot = runner.add_adapter("a", make_lora_adapter(runner.config, rank=4, targets=("q_proj",)))
    assert slot >= 0
    cases = (([-1, -1], False), ([-1, slot], True), ([slot], True), ([-1], False), ([slot, -1], True))
    for pos, (ids, lora) in enumerate(cases, start=1):
        out = runner.execute_device(_decode(ids, pos=pos))
        assert out.shape[0] == len(ids)
        (key,) = [k for k, g in dg._graphs.items() if g.staging.dev[k[0]] == pos]  # row 0 of field 1: position
        assert key[:2] == (len(ids), lora)
    assert sorted(k[:2] for k in dg._graphs) == [(1, False), (1, True), (2, False), (2, True)]
    (g,) = [x for k, x in dg._graphs.items() if k[:2] == (2, True)]
    assert g.staging.dev[8:12].tolist() == [slot, 0, 1, 0]  # LoRA slots, LoRA rows of the last step: [slot, -1]


def test_the_runner_checks_each_step_before_staging_it(tmp_path: Path, log: list[str]) -> None:
    runner = _runner(tmp_path, log)
    runner.execute_device(_decode([-1]))
    log.clear()
    past = make_step([([3], 16 * BS, list(range(16)) + [16], -1)], BS)  # slot 16 * BS: past a 16-block cache
    with pytest.raises(ValueError, match="past the KV cache"):
        runner.execute_device(past)
    with pytest.raises(ValueError, match="unloaded adapter slot"):
        runner.execute_device(_decode([-1, 3]))
    step = _decode([-1])
    bad = StepInput(step.token_ids, step.positions, step.adapter_ids, step.slot_mapping,
                    torch.tensor([0, 2]), step.context_lens, step.block_tables, step.logits_indices)  # fmt: skip
    with pytest.raises(ValueError, match="query_start_loc ends at 2"):
        runner.execute_device(bad)
    long_past = make_step([(list(range(3, 3 + SHORT + 8)), 16 * BS - SHORT, list(range(18)), -1)], BS)
    with pytest.raises(ValueError, match="past the KV cache"):  # a long step: the numpy reads
        runner.execute_device(long_past)
    assert log == []  # none of them was staged


@pytest.mark.parametrize("n", [1, 2, SHORT, SHORT + 1, 300])
def test_max_int_and_last_int_agree_with_torch(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    t = torch.randint(-(2**40), 2**40, (n,), generator=g)
    assert max_int(t) == int(t.max()) and last_int(t) == int(t[-1])
    assert isinstance(max_int(t), int) and isinstance(last_int(t), int)


def test_the_staging_event_follows_a_change_of_current_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging._current_stream builds a torch Stream only when the raw handle changes, and returns the new one."""
    s = Staging(torch.zeros(2, dtype=torch.int32), torch.zeros(2, dtype=torch.int32))
    assert s._current_stream() is None  # off CUDA: Event.record's default
    s._cuda_index = 0  # as if dev were on cuda:0
    raw = [11]
    made: list[tuple[str, int]] = []

    def current_stream(index: int) -> tuple[str, int]:
        made.append(("stream", raw[0]))
        return made[-1]

    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: raw[0], raising=False)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    first = s._current_stream()
    assert first == ("stream", 11) and s._current_stream() is first and len(made) == 1
    raw[0] = 22  # e.g. inside torch.cuda.stream(side)
    assert s._current_stream() == ("stream", 22) and len(made) == 2
    raw[0] = 11
    assert s._current_stream() == ("stream", 11) and len(made) == 3
