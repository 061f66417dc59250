"""The decode graphs' step input inside the graph (model.decode_graphs GRAPH_INPUT, session 17), on the CPU:
- the feed region's words (model.token_feed.stage_feed): each fed row's source, -1 for the other rows, then the token
  tensor's address as two int32 words that give it back;
- the graph's first kernel (token_feed.stage_in) and its greedy kernel (engine.greedy.greedy_in_graph) under Triton's
  interpreter (a subprocess: the interpreter is chosen at import): the staged buffer copied, the fed rows gathered
  from the tokens at the staged address and nothing else written; the greedy rows' argmax into the device tokens and
  the staged host slot only, nothing where the staged row count is 0;
- DecodeGraphs with fake graphs and events: which mode a bucket runs, the mode in the graph's key, the staged
  sources and address (mode 1: the ids are not written before the replay), mode 2-3's staging that only fills and
  waits for the graph's own event, and mode 3's host slots taken in turn, handed to the step only when it asks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from factories import interpreted_json, make_step, make_tiny_llama
from inlaid_worker.model import decode_graphs
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.decode_graphs import DecodeGraphs, _Graph, feed_view, staging_words
from inlaid_worker.model.step_input import GraphGreedy
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
from inlaid_worker.engine.greedy import greedy_in_graph
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
torch.manual_seed(0)
x = torch.randn(4, 300)
x[1, 7] = x[1, 250] = 1e9  # a tie: the first
x[2, 3] = float("nan")
ref = x.argmax(-1)
for words, slot in (((0, 1), None), ((3, 1), 1), ((2, 0), 0)):
    ctrl = torch.tensor(words, dtype=torch.int32)
    tok = torch.full((4,), -1, dtype=torch.int64)
    host = torch.full((2, 2, 4), -1, dtype=torch.int64)
    greedy_in_graph(x, ctrl, tok, host, block=64)
    k = words[0]
    want_tok = ref[:k].tolist() + [-1] * (4 - k)
    want_host = torch.full((2, 2, 4), -1, dtype=torch.int64)
    if slot is not None:
        want_host[slot, 0, :k] = ref[:k]
    res[f"greedy{words}"] = tok.tolist() == want_tok and torch.equal(host, want_host)
res["ref"] = ref.tolist()
print(json.dumps(res))
"""


def test_stage_in_and_greedy_in_graph_under_the_interpreter() -> None:
    res = interpreted_json(SCRIPT)
    assert res["ref"][1] == 7 and res["ref"][2] == 3, res  # the cases that tell the rules apart
    assert all(v for k, v in res.items() if k != "ref"), res


class FakeEvent:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def record(self, stream: Any = None) -> None:
        self.log.append(f"record-{self.name}")

    def synchronize(self) -> None:
        self.log.append(f"wait-{self.name}")


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    out: list[str] = []
    monkeypatch.setattr(decode_graphs, "new_event", lambda: FakeEvent(out, "copy"))
    monkeypatch.setattr(decode_graphs, "new_graph_event", lambda: FakeEvent(out, "graph"))
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)

    class Graph:
        def replay(self) -> None:
            out.append("replay")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
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
    g = _graphs(tmp_path, log, 3, False)  # no kernel reads of pinned memory (the CPU; or cudaHostRegister)
    assert [g.input_for(b) for b in (1, 4, 16)] == [0, 0, 0]  # the old path where modes 2-3 cannot apply
    g._host_reads = True
    assert [g.input_for(b) for b in (1, 4, 16)] == [3, 3, 0]  # 2-3 only where measured (buckets <= 4)
    g.graph_input = 2
    assert [g.input_for(b) for b in (1, 4, 16)] == [2, 2, 0]
    g.graph_input = 1  # only when asked for (it measured no gain alone)
    assert [g.input_for(b) for b in (1, 4, 16)] == [1, 1, 1]
    g.graph_input = 0
    assert [g.input_for(b) for b in (1, 4, 16)] == [0, 0, 0]
    with pytest.raises(ValueError, match="input mode"):
        g.graph_input = 4
    assert [staging_words(4, WIDTH, m) for m in (0, 1, 2, 3)] == [36, 42, 42, 44]


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


def test_modes_2_and_3_fill_only_and_wait_for_the_graphs_event(tmp_path: Path, log: list[str]) -> None:
    g = _graphs(tmp_path, log, 3, True)
    w = object()
    asks = [GraphGreedy(), None, GraphGreedy(), GraphGreedy()]
    seen = []
    for i, asked in enumerate(asks):
        step = _decode(2, pos=1 + i)
        if asked is not None:
            import dataclasses

            step = dataclasses.replace(step, graph_greedy=asked)
        log.append("|")
        g.run(w, step, host=False)
        (gr,) = g._graphs.values()
        st = gr.staging
        assert st.dev.tolist() == [0] * st.dev.numel()  # nothing copied: the graph's own kernel reads the host buffer
        at = 2 * (6 + WIDTH) + 2 + FEED_EXTRA
        seen.append(st.host[at : at + 2].tolist())
        if asked is not None:
            slot = seen[-1][1]
            gt = st.greedy
            assert gt is not None and asked.tokens is not None and asked.host is not None
            assert asked.tokens.data_ptr() == gt.tokens.data_ptr() and asked.tokens.shape == (2,)
            assert asked.host.data_ptr() == gt.host[slot].data_ptr() and asked.host.shape == (2, 2)
            assert gt.host[:, 1].tolist() == [[0, 0], [0, 0]]  # the flags rows: zeros
    assert seen == [[2, 0], [0, 0], [2, 1], [2, 0]]  # rows taken (0: not asked), the slots in turn
    # no copy and no host-side record: the wait is on the event the graph records (a no-op before its first replay)
    assert log == ["|", "wait-graph", "capture2", "replay"] + ["|", "wait-graph", "replay"] * 3


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
    for raw, want in (("0", 0), (" 3 ", 3), ("1", 1), ("", decode_graphs.GRAPH_INPUT)):
        monkeypatch.setenv("INLAID_GRAPH_INPUT", raw)
        assert decode_graphs.graph_input_env() == want, raw
    for raw in ("4", "-1", "two", "on"):
        monkeypatch.setenv("INLAID_GRAPH_INPUT", raw)
        with pytest.raises(ValueError, match="INLAID_GRAPH_INPUT|input mode"):
            decode_graphs.graph_input_env()


def test_mode_2_is_shipped() -> None:
    """Session 17 measured mode 2 (the fed ids gathered and the pinned staging buffer read by the graph's first kernel)
    lower than mode 0 in every round at batches 1 and 4 of two runs (bench/results/decode-2026-12-01-s17-b1.md);
    mode 3 missed one round of sixteen, mode 1 gained nothing."""
    assert decode_graphs.GRAPH_INPUT == 2


def test_a_wide_staging_buffer_keeps_the_copy_engine(tmp_path: Path, log: list[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Modes 2-3 read the pinned buffer over PCIe with SM loads: only while it is at most IN_GRAPH_COPY_MAX_BYTES."""
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
        made.append(FakeEvent(log, f"graph{len(made)}"))
        return made[-1]

    monkeypatch.setattr(decode_graphs, "new_graph_event", tagged)
    g = _graphs(tmp_path, log, 2, True)
    g.run(object(), _decode(2, pos=1), host=False)
    first = made[-1].name
    log.clear()
    g.run(object(), _decode(2, pos=2), host=False)  # another weights object: the first graph is stale
    assert f"wait-{first}" in log and log.index(f"wait-{first}") < log.index("capture2"), log


def test_host_register_under_either_allocator_setting_name_turns_host_reads_off() -> None:
    conf = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"
    assert decode_graphs.host_reads_ok({"PYTORCH_CUDA_ALLOC_CONF": conf}) is False
    assert decode_graphs.host_reads_ok({"PYTORCH_ALLOC_CONF": conf}) is False  # torch's device-neutral name
    assert decode_graphs.host_reads_ok({"PYTORCH_CUDA_ALLOC_CONF": "", "PYTORCH_ALLOC_CONF": conf}) is True  # CUDA's wins
    assert decode_graphs.host_reads_ok({}) is True
