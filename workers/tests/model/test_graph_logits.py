"""The one logits buffer all of a runner's graphs write (model.graph_logits), on the CPU: GraphLogits hands out rows of
one device buffer and one host buffer, each made once; write_logits gives the LM head's float32 logits (what
`.float()` gave) into it; the decode graphs' bodies of two buckets and the prefill graphs' padded steps all write
that one storage (forward stubbed: no kernel runs), and their host views share one host buffer (the graph-less
prefill twin's host logits are fresh copies instead: on the CPU .cpu() would hand out the shared rows, which the next
step overwrites); a ModelRunner hands its decode and prefill graphs the same GraphLogits. On the GPU (real captures,
memory): test_graph_logits_gpu.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from factories import make_step, make_tiny_llama
from fake_cuda import fake_graphs
from inlaid_worker.model import decode_graphs, prefill_graphs
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.decode_graphs import DecodeGraphs, _Graph, stage_step
from inlaid_worker.model.graph_logits import GraphLogits, graph_rows, write_logits
from inlaid_worker.model.prefill_graphs import PrefillGraphs

BS = 4
WIDTH = 8
HIDDEN = 16
VOCAB = 40


def test_rows_of_one_device_buffer_made_once() -> None:
    gl = GraphLogits(torch.device("cpu"), 8)
    assert gl.device_bytes == 0 and gl.host_bytes == 0  # nothing before the first capture
    a, b = gl.out(2, VOCAB), gl.out(8, VOCAB)
    assert a.shape == (2, VOCAB) and b.shape == (8, VOCAB) and a.dtype == b.dtype == torch.float32
    assert a.data_ptr() == b.data_ptr() and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    assert gl.device_bytes == 8 * VOCAB * 4
    b.fill_(3.0)
    assert a.eq(3.0).all()  # one buffer: a graph's rows are the next one's
    with pytest.raises(ValueError, match="holds 8"):
        gl.out(9, VOCAB)
    with pytest.raises(ValueError, match="vocabulary"):
        gl.out(2, VOCAB + 1)
    with pytest.raises(ValueError, match="positive"):
        GraphLogits(torch.device("cpu"), 0)


def test_rows_of_one_host_buffer_made_by_the_first_host_step() -> None:
    gl = GraphLogits(torch.device("cpu"), 8)
    h1 = gl.host(torch.zeros(1, VOCAB))
    h4 = gl.host(torch.zeros(4, VOCAB))
    assert h1.shape == (1, VOCAB) and h4.shape == (4, VOCAB) and h1.data_ptr() == h4.data_ptr()
    assert not h4.is_pinned() and gl.host_bytes == 8 * VOCAB * 4  # pinned only for CUDA tensors
    assert gl.device_bytes == 0  # the host path never makes the device buffer
    with pytest.raises(ValueError, match="buffer's is"):
        gl.host(torch.zeros(1, VOCAB, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_logits_gives_the_widened_lm_head_output_in_place(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    hidden, head = torch.randn(3, HIDDEN, generator=g).to(dtype), torch.randn(VOCAB, HIDDEN, generator=g).to(dtype)
    buf = torch.full((5, VOCAB), float("nan"))
    got = write_logits(buf[:3], hidden, head)
    assert got.data_ptr() == buf.data_ptr() and got.dtype == torch.float32
    assert torch.equal(got, F.linear(hidden, head).float())  # bit for bit what .float() gave
    assert buf[3:].isnan().all()  # the rows past the step's are left as they were


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph objects and pool handles as plain objects (no CUDA needed)."""
    fake_graphs(monkeypatch)


def _stub_forward(monkeypatch: pytest.MonkeyPatch, module: Any, table: torch.Tensor) -> None:
    """forward_fast -> each token row's hidden state table[token] (the forward's inputs as the body passes them)."""

    def forward(weights: Any, config: Any, tokens: torch.Tensor, *rest: Any) -> torch.Tensor:
        return table[tokens.long()]

    monkeypatch.setattr(module, "forward_fast", forward)


def _weights() -> tuple[SimpleNamespace, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(lm_head=torch.randn(VOCAB, HIDDEN, generator=g)), torch.randn(400, HIDDEN, generator=g)


def _setup(tmp_path: Path, blocks: int, rows: int) -> tuple[Any, torch.Tensor, GraphLogits]:
    """The tiny model's config, a zero KV cache of `blocks` blocks, a shared logits buffer of `rows` rows."""
    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, blocks, BS, c.num_kv_heads, c.head_dim)
    return c, kv, GraphLogits(torch.device("cpu"), rows)


def _graphless_prefill(c: Any, kv: torch.Tensor, logits: GraphLogits) -> PrefillGraphs:
    return PrefillGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, 12, None, capture=False, logits=logits)


def _stubbed(monkeypatch: pytest.MonkeyPatch, module: Any) -> tuple[SimpleNamespace, torch.Tensor]:
    """_weights(), with module's forward_fast stubbed to read their table."""
    weights, table = _weights()
    _stub_forward(monkeypatch, module, table)
    return weights, table


def _decode(n: int, pos: int = 5) -> Any:
    return make_step([([3 + 7 * i], pos, [2 * i, 2 * i + 1], -1) for i in range(n)], BS)


def test_decode_graph_bodies_of_two_buckets_write_the_shared_buffer(
    tmp_path: Path, no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, kv, shared = _setup(tmp_path, 16, 8)
    dg = DecodeGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, WIDTH, None, buckets=(1, 4, 8), pdl_mode=0,
                      fusion="none", logits=shared)  # fmt: skip
    weights, table = _stubbed(monkeypatch, decode_graphs)
    outs = {}
    for b, n in ((4, 3), (1, 1)):
        g = dg._new(b)
        stage_step(g.dev, b, WIDTH, _decode(n))
        body, keep = dg._body(weights, g, b, False, "none")  # type: ignore[arg-type]
        out = body()
        assert out.shape == (b, VOCAB) and out.data_ptr() == shared.out(1, VOCAB).data_ptr()
        assert any(isinstance(k, torch.Tensor) and k.data_ptr() == out.data_ptr() for k in keep)  # kept alive
        tokens = [3 + 7 * i for i in range(n)] + [0] * (b - n)  # padding rows: token 0
        assert torch.equal(out, F.linear(table[tokens], weights.lm_head).float())
        outs[b] = out
    assert shared.device_bytes == 8 * VOCAB * 4  # one buffer for both buckets
    assert torch.equal(outs[4][:1], outs[1])  # bucket 1's replay overwrote bucket 4's first row: one buffer
    with pytest.raises(ValueError, match="rows < bucket"):
        DecodeGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, WIDTH, None, buckets=(1, 16), logits=shared)


def test_prefill_padded_steps_write_the_shared_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c, kv, shared = _setup(tmp_path, 64, 256)
    pg = _graphless_prefill(c, kv, shared)
    weights, table = _stubbed(monkeypatch, prefill_graphs)
    one = make_step([([5, 6, 7], 0, [0], -1)], BS)  # bucket (16, 1)
    two = make_step([([5, 6, 7], 0, [0], -1), ([8, 9], 4, [1, 2], -1)], BS)  # bucket (16, 2)
    for step, last in ((one, [7]), (two, [7, 9])):
        assert pg.can_run(step)
        out = pg.run(weights, step, host=False)  # type: ignore[arg-type]
        assert out.data_ptr() == shared.out(1, VOCAB).data_ptr() and out.shape == (len(last), VOCAB)
        assert torch.equal(out, F.linear(table[last], weights.lm_head).float())
    assert len(pg._buckets) == 2 and shared.device_bytes == 256 * VOCAB * 4
    small = _graphless_prefill(c, kv, GraphLogits(torch.device("cpu"), 1))
    assert small.can_run(one) and not small.can_run(two)  # SB 2 > the buffer's rows: eager


def test_the_graph_less_twins_host_logits_outlive_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, kv, shared = _setup(tmp_path, 64, 256)
    pg = _graphless_prefill(c, kv, shared)
    weights, table = _stubbed(monkeypatch, prefill_graphs)
    first = pg.run(weights, make_step([([5, 6, 7], 0, [0], -1)], BS), host=True)  # type: ignore[arg-type]
    second = pg.run(weights, make_step([([8, 9], 0, [1], -1)], BS), host=True)  # type: ignore[arg-type]  # same bucket
    assert len(pg._buckets) == 1  # one bucket (16, 1): both steps wrote row 0 of the shared device buffer
    assert torch.equal(first, F.linear(table[[7]], weights.lm_head).float())  # not overwritten by the second step
    assert torch.equal(second, F.linear(table[[9]], weights.lm_head).float()) and not torch.equal(first, second)
    dev = shared.out(1, VOCAB).untyped_storage().data_ptr()
    assert len({first.untyped_storage().data_ptr(), second.untyped_storage().data_ptr(), dev}) == 3  # two copies
    assert shared.host_bytes == 0  # the twin's host path takes no rows of the (pinned) host buffer


def test_host_steps_of_decode_and_prefill_graphs_share_one_host_buffer(
    tmp_path: Path, no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, kv, shared = _setup(tmp_path, 16, 256)
    dg = DecodeGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, WIDTH, None, pdl_mode=0, logits=shared)
    event = SimpleNamespace(record=lambda stream=None: None, synchronize=lambda: None)
    monkeypatch.setattr(decode_graphs, "new_event", lambda: event)

    def capture(weights: Any, graph: _Graph, b: int, with_lora: bool, fusion: str) -> _Graph:
        dg.captures += 1
        return _Graph(graph.graph, graph.staging, shared.out(b, VOCAB).fill_(float(b)), (), views=graph.views)

    dg._capture = capture  # type: ignore[method-assign]
    w = object()
    first = dg.run(w, _decode(3), host=True)  # type: ignore[arg-type]  # bucket 4
    assert first.tolist() == [[4.0] * VOCAB] * 3
    second = dg.run(w, _decode(1), host=True)  # type: ignore[arg-type]  # bucket 1: the same host rows
    assert second.tolist() == [[1.0] * VOCAB] and first.data_ptr() == second.data_ptr()
    assert first[0].eq(1.0).all()  # valid until the next host step of any graph (documented)
    hosts = {k[0]: g.host_logits for k, g in dg._graphs.items()}
    assert hosts[4] is not None and hosts[1] is not None and hosts[4].shape == (4, VOCAB)
    assert hosts[4].data_ptr() == hosts[1].data_ptr() and shared.host_bytes == 256 * VOCAB * 4
    pg = PrefillGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, WIDTH, None, capture=True,
                       logits=shared)  # fmt: skip
    pg._body = lambda weights, dims, buf, with_lora: (lambda: shared.out(dims.seqs, VOCAB).fill_(9.0), ())  # type: ignore[method-assign]  # noqa: E501

    def record(b: Any) -> None:
        b.graph, b.logits = torch.cuda.CUDAGraph(), b.body()

    pg._record = record  # type: ignore[method-assign]
    out = pg.run(w, make_step([([5, 6, 7], 0, [0], -1)], BS), host=True)  # type: ignore[arg-type]
    assert out.tolist() == [[9.0] * VOCAB] and out.data_ptr() == first.data_ptr()  # the same host buffer


def test_the_buffer_rows_hold_max_num_seqs_in_both_bucket_lists() -> None:
    from inlaid_worker.model.decode_graphs import BUCKETS
    from inlaid_worker.model.prefill_layout import S_BUCKETS

    both = (BUCKETS, S_BUCKETS)
    assert graph_rows(None, both) == 256  # any step: the largest bucket
    assert [graph_rows(n, both) for n in (1, 5, 24, 64, 80, 180, 200, 1000)] == [1, 8, 32, 64, 96, 192, 256, 256]
    assert graph_rows(0, both) == 1


def test_a_runner_hands_its_graphs_one_buffer(tmp_path: Path) -> None:
    from inlaid_worker.model.runner import ModelRunner

    model = make_tiny_llama(tmp_path / "m")
    r = ModelRunner(model, "cpu", num_kv_blocks=8, block_size=BS, backend="triton", prefill_graphs=True)
    assert r._prefill is not None and r._prefill._logits is r._graph_logits and r.graph_logits_rows == 256
    r.prefill_graphs = False
    r.prefill_graphs = True  # made again: the same buffer
    assert r._prefill is not None and r._prefill._logits is r._graph_logits
    small = ModelRunner(model, "cpu", num_kv_blocks=8, block_size=BS, backend="triton", max_num_seqs=24)
    assert small.graph_logits_rows == 32  # decode bucket 24, prefill SB 32
