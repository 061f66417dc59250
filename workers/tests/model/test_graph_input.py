"""The decode graphs' step input inside the graph (model.decode_graphs GRAPH_INPUT, session 17), on the CPU:
- the feed region's words (model.token_feed.stage_feed): each fed row's source, -1 for the other rows, then the token
  tensor's address as two int32 words that give it back;
- the graph's first kernel (token_feed.stage_in) under Triton's interpreter (a subprocess: the interpreter is chosen
  at import): the staged buffer copied, the fed rows gathered from the tokens at the staged address and nothing else
  written;
- DecodeGraphs with fake graphs and events: which mode a bucket runs (mode 2 up to its bucket cap, which a benchmark
  may lift), the mode in the graph's key, the staged sources and address (mode 1: the ids are not written before the
  replay), mode 2's staging that only fills and waits for the graph's own event; session 17's mode 3 is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import interpreted_json, make_step, make_tiny_llama
from fake_cuda import FakeEvent, fake_graphs
from inlaid_worker.model import decode_graphs
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.decode_graphs import DecodeGraphs, _Graph, feed_view, staging_words
from inlaid_worker.model.token_feed import FEED_EXTRA, address_words, make_feed, stage_feed

BS = 4
WIDTH = 3
VOCAB = 7


def test_address_words_give_the_address_back() -> None:
    for addr in (0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x7F12_8000_0010, 0x1_0000_0000, 2**63 - 8):
        lo, hi = address_words(addr)
        assert all(-(2**31) <= w < 2**31 for w in (lo, hi))
        assert ((hi & 0xFFFF_FFFF) << 32 | (lo & 0xFFFF_FFFF)) == addr


def test_stage_feed_writes_sources_then_the_address() -> None:
    tokens = torch.tensor([5, 6, 7], dtype=torch.int64)
    view = np.full(4 + FEED_EXTRA, 99, dtype=np.int32)
    stage_feed(view, 3, make_feed(tokens, [2, 0]), tokens)
    assert view[:4].tolist() == [2, 0, -1, -1]  # a row the feed does not cover and a padding row: -1
    lo, hi = address_words(tokens.data_ptr())
    assert view[4:].tolist() == [lo, hi]
    stage_feed(view, 3, make_feed(tokens, [0, 1, 2]), tokens)  # the plain prefix (src None)
    assert view[:4].tolist() == [0, 1, 2, -1]
    stage_feed(view, 3, None, None)
    assert view.tolist() == [-1] * 4 + [0, 0]
    with pytest.raises(ValueError, match="fed rows"):
        stage_feed(view, 1, make_feed(tokens, [0, 1]), tokens)


SCRIPT = r"""
import json, torch
from inlaid_worker.model.token_feed import FEED_EXTRA, make_feed, stage_feed, stage_in
res = {}
b, w = 4, 3
off = b * (6 + w)
n = off + b + FEED_EXTRA
tokens = torch.tensor([11, 22, 2**31 - 1, 44, 55], dtype=torch.int64)
for copy in (True, False):
    src = torch.arange(n, dtype=torch.int32) + 100
    stage_feed(src.numpy()[off:], 3, make_feed(tokens, [4, 2]), tokens)
    dev = torch.full((n,), -7, dtype=torch.int32) if copy else src.clone()
    ref = src.clone()
    ref[0], ref[1] = 55, 2**31 - 1  # rows 0-1 fed; row 2 not fed, row 3 padding: as staged
    stage_in(src, dev, b, off, copy)
    res[f"copy{copy}"] = torch.equal(dev, ref)
print(json.dumps(res))
"""


def test_stage_in_under_the_interpreter() -> None:
    res = interpreted_json(SCRIPT)
    assert res == {"copyTrue": True, "copyFalse": True}, res


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    out: list[str] = []
    monkeypatch.setattr(decode_graphs, "new_event", lambda: FakeEvent(out, "-copy"))
    monkeypatch.setattr(decode_graphs, "new_graph_event", lambda: FakeEvent(out, "-graph"))
    fake_graphs(monkeypatch, out)
    return out


def _graphs(tmp_path: Path, log: list[str], mode: int, host_reads: bool) -> DecodeGraphs:
    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, 16, BS, c.num_kv_heads, c.head_dim)
    g = DecodeGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, WIDTH, None, buckets=(1, 2, 4, 16, 24),
                     pdl_mode=0)  # fmt: skip
    g.graph_input = mode
    g._host_reads = host_reads  # as on CUDA with kernels that may read pinned memory

    def capture(weights: Any, graph: _Graph, b: int, with_lora: bool, fusion: str) -> _Graph:
        log.append(f"capture{b}")
        g.captures += 1
        return _Graph(graph.graph, graph.staging, torch.zeros(b, VOCAB), ())

    g._capture = capture  # type: ignore[method-assign]
    return g


def _decode(n: int, feed: Any = None, pos: int = 1) -> Any:
    step = make_step([([3 + i], pos, [2 * i, 2 * i + 1], -1) for i in range(n)], BS)
    if feed is None:
        return step
    import dataclasses

    return dataclasses.replace(step, token_feed=feed)


def test_the_mode_a_bucket_runs(tmp_path: Path, log: list[str]) -> None:
    g = _graphs(tmp_path, log, 2, False)  # no kernel reads of pinned memory (the CPU; or cudaHostRegister)
    assert [g.input_for(b) for b in (1, 4, 16)] == [0, 0, 0]  # the old path where mode 2 cannot apply
    g._host_reads = True
    assert g.in_graph_max_bucket == decode_graphs.IN_GRAPH_COPY_MAX_BUCKET
    cap = decode_graphs.IN_GRAPH_COPY_MAX_BUCKET
    assert [g.input_for(b) for b in (1, 4, 16)] == [2 if b <= cap else 0 for b in (1, 4, 16)]  # only where measured
    g.in_graph_max_bucket = 16  # (a benchmark measuring the larger buckets)
    assert [g.input_for(b) for b in (1, 4, 16, 24)] == [2, 2, 2, 0]
    g.graph_input = 1  # only when asked for (it measured no gain alone)
    assert [g.input_for(b) for b in (1, 4, 16)] == [1, 1, 1]
    g.graph_input = 0
    assert [g.input_for(b) for b in (1, 4, 16)] == [0, 0, 0]
    for bad in (3, 4, -1):  # 3: session 17's greedy-in-graph mode, removed in session 18
        with pytest.raises(ValueError, match="input mode must be one of 0, 1, 2, got"):
            g.graph_input = bad
    assert g.graph_input == 0
    assert [staging_words(4, WIDTH, m) for m in (0, 1, 2)] == [36, 42, 42]


def test_lifting_the_cap_keeps_both_modes_graphs_of_a_bucket(tmp_path: Path, log: list[str]) -> None:
    """The benchmark's A/B at a bucket over the cap: mode 0's and mode 2's graphs of bucket 16 coexist (the mode is
    part of the key) and each keeps its own staging (mode 2's: the graph's event, no copy)."""
    g = _graphs(tmp_path, log, 0, True)
    g.in_graph_max_bucket = 16
    w = object()
    for mode in (0, 2, 0, 2):
        g.graph_input = mode
        g.run(w, _decode(9), host=False)
    assert sorted(k[4] for k in g._graphs) == [0, 2] and {k[0] for k in g._graphs} == {16}
    assert log.count("capture16") == 2 and log.count("replay") == 4
    assert log.count("record-copy") == 2 and log.count("wait-graph") == 2  # mode 0 copies; mode 2 waits on its event


def test_mode_1_stages_the_sources_and_address_not_the_ids(tmp_path: Path, log: list[str]) -> None:
    g = _graphs(tmp_path, log, 1, False)
    tokens = torch.tensor([40, 41, 42], dtype=torch.int64)
    g.run(object(), _decode(3, make_feed(tokens, [2, 0])), host=False)  # rows 0-1 fed, row 2 not
    (key,) = g._graphs
    assert key[0] == 4 and key[4] == 1
    (gr,) = g._graphs.values()
    dev = gr.staging.dev
    assert dev.numel() == staging_words(4, WIDTH, 1)
    assert dev[:4].tolist() == [3, 4, 5, 0]  # the host's ids stay: the graph's first kernel gathers the fed ones
    fv = feed_view(dev, 4, WIDTH)
    assert fv is not None and fv[:4].tolist() == [2, 0, -1, -1] and tuple(fv[4:]) == address_words(tokens.data_ptr())
    assert gr.staging.held is tokens  # kept alive while the staged address points at it
    assert log == ["record-copy", "capture4", "replay"]  # the copy and its event, as in mode 0
    g.graph_input = 0  # the old path: its own graph, the fed ids written into the staged ids before the replay
    g.run(object(), _decode(3, make_feed(tokens, [2, 0])), host=False)
    (old,) = [x for k, x in g._graphs.items() if k[4] == 0]
    assert old.staging.dev.numel() == staging_words(4, WIDTH, 0) and old.staging.dev[:3].tolist() == [42, 40, 5]


def test_mode_2_fills_only_and_waits_for_the_graphs_event(tmp_path: Path, log: list[str]) -> None:
    g = _graphs(tmp_path, log, 2, True)
    w = object()
    for i in range(3):
        log.append("|")
        g.run(w, _decode(2, pos=1 + i), host=False)
        (gr,) = g._graphs.values()
        st = gr.staging
        assert st.dev.tolist() == [0] * st.dev.numel()  # nothing copied: the graph's own kernel reads the host buffer
        assert st.host.numel() == staging_words(2, WIDTH, 2)
        assert st.host[2 : 2 + 2].tolist() == [1 + i] * 2  # the positions, staged in the pinned buffer itself
    # no copy and no host-side record: the wait is on the event the graph records (a no-op before its first replay)
    assert log == ["|", "wait-graph", "capture2", "replay"] + ["|", "wait-graph", "replay"] * 2


def test_feed_tokens_of_another_dtype_are_staged_from_an_int64_copy(tmp_path: Path, log: list[str]) -> None:
    g = _graphs(tmp_path, log, 1, False)
    tokens = torch.tensor([9, 8], dtype=torch.int32)
    g.run(object(), _decode(2, make_feed(tokens, [1, 0])), host=False)
    (gr,) = g._graphs.values()
    held = gr.staging.held
    assert held is not None and held.dtype == torch.int64 and held.tolist() == [9, 8]
    fv = feed_view(gr.staging.dev, 2, WIDTH)
    assert fv is not None and tuple(fv[2:]) == address_words(held.data_ptr())


def test_graph_input_env_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INLAID_GRAPH_INPUT", raising=False)
    assert decode_graphs.graph_input_env() == decode_graphs.GRAPH_INPUT
    for raw, want in (("0", 0), (" 2 ", 2), ("1", 1), ("", decode_graphs.GRAPH_INPUT)):
        monkeypatch.setenv("INLAID_GRAPH_INPUT", raw)
        assert decode_graphs.graph_input_env() == want, raw
    for raw in ("3", "4", "-1"):  # 3: session 17's mode 3, removed: the variable and the allowed values named
        monkeypatch.setenv("INLAID_GRAPH_INPUT", raw)
        with pytest.raises(ValueError, match=r"^INLAID_GRAPH_INPUT: decode graph input mode must be one of 0, 1, 2, "):
            decode_graphs.graph_input_env()
    for raw in ("two", "on"):
        monkeypatch.setenv("INLAID_GRAPH_INPUT", raw)
        with pytest.raises(ValueError, match="INLAID_GRAPH_INPUT"):
            decode_graphs.graph_input_env()


def test_mode_2_is_shipped() -> None:
    """Session 17 measured mode 2 (the fed ids gathered and the pinned staging buffer read by the graph's first kernel)
    lower than mode 0 in every round at batches 1 and 4 of two runs (bench/results/decode-2026-12-01-s17-b1.md);
    mode 1 gained nothing (mode 3, greedy tokens in the graph, missed rounds and was removed in session 18). Session 18
    measured buckets 8 and 16 lower in 7 of 8 rounds each (bench/results/decode-2026-12-01-s18-input-mid.md), so the
    cap stays at 4."""
    assert decode_graphs.GRAPH_INPUT == 2
    assert decode_graphs.IN_GRAPH_COPY_MAX_BUCKET == 4


def test_a_wide_staging_buffer_keeps_the_copy_engine(tmp_path: Path, log: list[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Mode 2 reads the pinned buffer over PCIe with SM loads: only while it is at most IN_GRAPH_COPY_MAX_BYTES."""
    g = _graphs(tmp_path, log, 2, True)
    assert [g.input_for(b) for b in (1, 2, 4)] == [2, 2, 2]
    monkeypatch.setattr(decode_graphs, "IN_GRAPH_COPY_MAX_BYTES", staging_words(2, WIDTH, 2) * 4)
    assert [g.input_for(b) for b in (1, 2, 4)] == [2, 2, 0]


def test_dropping_a_stale_mode_2_graph_waits_for_its_last_read(tmp_path: Path, log: list[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A graph dropped because the weights (or LoRA pools) changed frees its pinned staging buffer, which its last
    replay's first kernel reads through its address (torch does not know it): the drop waits for that read first, or
    the next graph's staging (same size) could take the block and be refilled before the old replay reads it."""
    made: list[FakeEvent] = []

    def tagged() -> FakeEvent:
        made.append(FakeEvent(log, f"-graph{len(made)}"))
        return made[-1]

    monkeypatch.setattr(decode_graphs, "new_graph_event", tagged)
    g = _graphs(tmp_path, log, 2, True)
    g.run(object(), _decode(2, pos=1), host=False)
    first = made[-1].suffix
    log.clear()
    g.run(object(), _decode(2, pos=2), host=False)  # another weights object: the first graph is stale
    assert f"wait{first}" in log and log.index(f"wait{first}") < log.index("capture2"), log


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_mode_2_above_the_cap_equals_mode_0(tmp_path: Path) -> None:
    """With the bucket cap lifted (the session 18 benchmark's setting), a decode step of 9 sequences (bucket 16) with
    fed tokens replays mode 2's graph (the first kernel reads the pinned buffer, gathers the fed ids) and gives mode 0's
    logits and KV writes from the same KV state; both graphs of the bucket coexist."""
    import dataclasses

    from inlaid_worker.model.runner import ModelRunner

    runner = ModelRunner(make_tiny_llama(tmp_path / "m"), device="cuda", dtype=torch.float16, num_kv_blocks=64,
                         block_size=BS, backend="triton")  # fmt: skip
    dg = runner._graphs
    assert dg is not None
    dg.in_graph_max_bucket = 16
    gen = torch.Generator().manual_seed(3)
    n = 9
    seqs = [torch.randint(3, 300, (12,), generator=gen).tolist() for _ in range(n)]
    tables = [list(range(i * 4, i * 4 + 4)) for i in range(n)]
    runner.execute_device(make_step([(s[:10], 0, tables[i], -1) for i, s in enumerate(seqs)], BS))
    fed = torch.tensor([s[10] for s in seqs][::-1], dtype=torch.int64, device="cuda")  # row i takes fed[n - 1 - i]
    step = make_step([([0], 10, tables[i], -1) for i in range(n)], BS)  # placeholders where the feed writes
    step = dataclasses.replace(step, token_feed=make_feed(fed, [n - 1 - i for i in range(n)]))
    snap = runner.kv_cache.clone()
    out = {}
    for mode in (0, 2, 0, 2):  # (the second pass replays the captured graphs)
        dg.graph_input = mode
        runner.kv_cache.copy_(snap)
        logits = runner.execute_device(step).clone()
        torch.cuda.synchronize()
        out[mode] = (logits.cpu(), runner.kv_cache.clone())
    assert sorted(k[4] for k in dg._graphs if k[0] == 16) == [0, 2]
    torch.testing.assert_close(out[2][0], out[0][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out[2][1], out[0][1], rtol=1e-3, atol=1e-3)
    host = make_step([([s[10]], 10, tables[i], -1) for i, s in enumerate(seqs)], BS)  # the ids on the host instead
    runner.kv_cache.copy_(snap)
    torch.testing.assert_close(runner.execute_device(host).cpu(), out[2][0], rtol=1e-3, atol=1e-3)
