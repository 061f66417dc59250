"""Which steps model.prefill_graphs takes (the rest run eagerly): the padded token cap (default 1024, env
INLAID_PREFILL_GRAPH_MAX_TOKENS), the live set once it is full (a new bucket is captured only when asked for
twice and more often than the least used live one: no churn with more hot shapes than room), and the runner's
default (on only where decode steps replay CUDA graphs; env INLAID_PREFILL_GRAPHS=0 turns it off). The forward is stubbed: no kernel runs."""

from __future__ import annotations

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.prefill_graphs import MAX_TOKENS, PrefillGraphs

BS = 4
WIDTH = 300  # block-table columns: a 1100-row chunk needs 275 blocks of 4


def _graphs(tmp_path, **kw) -> PrefillGraphs:  # type: ignore[no-untyped-def]
    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, 8, BS, c.num_kv_heads, c.head_dim)
    g = PrefillGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, WIDTH, None, capture=False, **kw)
    g._body = lambda weights, dims, buf, with_lora: (lambda: torch.full((dims.seqs, 3), float(dims.tokens)), ())  # type: ignore[method-assign]  # noqa: E501
    return g


def _chunk(rows: int, seqs: int = 1):  # type: ignore[no-untyped-def]
    """One prompt chunk of `rows` rows plus seqs - 1 decode rows (a mixed step when seqs > 1)."""
    blocks = list(range(-(-rows // BS)))
    chunks = [(list(range(3, 3 + rows)), 0, blocks, -1)]
    chunks += [([5], 7, [0, 1], -1) for _ in range(seqs - 1)]
    return make_step(chunks, BS)


def test_steps_over_the_token_cap_run_eagerly(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INLAID_PREFILL_GRAPH_MAX_TOKENS", raising=False)
    g = _graphs(tmp_path)
    assert g.max_tokens == MAX_TOKENS == 1024
    assert g.can_run(_chunk(1024)) and g.can_run(_chunk(990, seqs=33))  # bucket 1024: graphed
    assert not g.can_run(_chunk(1025)) and not g.can_run(_chunk(1000, seqs=33))  # bucket 1536: eager
    monkeypatch.setenv("INLAID_PREFILL_GRAPH_MAX_TOKENS", "2048")
    assert _graphs(tmp_path).can_run(_chunk(1100))
    monkeypatch.setenv("INLAID_PREFILL_GRAPH_MAX_TOKENS", "512")
    small = _graphs(tmp_path)
    assert small.can_run(_chunk(512)) and not small.can_run(_chunk(513))  # 513 rows pad to 768
    monkeypatch.setenv("INLAID_PREFILL_GRAPH_MAX_TOKENS", "0")
    assert not _graphs(tmp_path).can_run(_chunk(16))
    assert _graphs(tmp_path, max_tokens=128).can_run(_chunk(128))  # the argument wins over the env


def test_live_buckets_are_least_recently_used_and_captured_on_a_second_request(tmp_path) -> None:
    g = _graphs(tmp_path, max_graphs=2)
    a, b, c = _chunk(16), _chunk(100), _chunk(300)  # buckets 16, 128, 384 rows

    def run(step) -> float:  # type: ignore[no-untyped-def]
        assert g.can_run(step)
        return float(g.run(None, step)[0, 0])  # type: ignore[arg-type]  # the stub's logits: the bucket's rows

    assert (run(a), run(b), run(a)) == (16.0, 128.0, 16.0)
    assert list(g._buckets) == [(128, 1, False), (16, 1, False)] and g.evictions == 0
    assert not g.can_run(c), "full: a new bucket's first request runs eagerly and evicts nothing"
    assert list(g._buckets) == [(128, 1, False), (16, 1, False)]
    assert run(c) == 384.0, "its second request takes the least recently run bucket's place"
    assert list(g._buckets) == [(16, 1, False), (384, 1, False)] and g.evictions == 1
    assert run(a) == 16.0 and g.evictions == 1  # still live: no capture, no eviction
    assert not g.can_run(b) and run(b) == 128.0 and list(g._buckets) == [(16, 1, False), (128, 1, False)]
    assert g.evictions == 2 and g.runs == 6


def test_more_hot_buckets_than_room_do_not_churn_and_a_shift_is_followed(tmp_path) -> None:
    g = _graphs(tmp_path, max_graphs=4)
    shapes = [_chunk(16), _chunk(40), _chunk(100), _chunk(200), _chunk(300), _chunk(500)]  # 6 buckets, room for 4
    for i in range(300):  # used in turn: with LRU alone every step past the first 4 would re-capture
        step = shapes[i % 6]
        if g.can_run(step):
            g.run(None, step)  # type: ignore[arg-type]
    assert g.evictions == 0 and len(g._buckets) == 4
    late = [_chunk(600), _chunk(900)]  # the traffic moves to two new shapes: they replace the idle ones
    for i in range(200):
        step = late[i % 2]
        if g.can_run(step):
            g.run(None, step)  # type: ignore[arg-type]
    assert {(768, 1, False), (1024, 1, False)} <= set(g._buckets)
    assert g.evictions == 2


def test_full_cache_and_zero_room(tmp_path) -> None:
    g = _graphs(tmp_path, max_graphs=0)
    step = _chunk(16)
    assert not g.can_run(step) and not g.can_run(step), "no room at all: always eager"
    one = _graphs(tmp_path, max_graphs=1)
    one.run(None, _chunk(16))  # type: ignore[arg-type]
    assert not one.can_run(_chunk(40)) and one.can_run(_chunk(40))
    one.run(None, _chunk(40))  # type: ignore[arg-type]
    assert list(one._buckets) == [(64, 1, False)] and one.evictions == 1


def test_runner_default_is_on_only_with_cuda_graphs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.model.runner import ModelRunner

    model = make_tiny_llama(tmp_path / "r")
    kw = dict(num_kv_blocks=8, block_size=BS, max_adapters=2, backend="triton")
    monkeypatch.delenv("INLAID_PREFILL_GRAPHS", raising=False)
    assert not ModelRunner(model, "cpu", **kw).prefill_graphs, "off on the CPU by default"
    assert ModelRunner(model, "cpu", prefill_graphs=True, **kw).prefill_graphs, "the graph-less twin, asked for"
    assert not ModelRunner(model, "cpu", backend="torch", num_kv_blocks=8, block_size=BS, prefill_graphs=True).prefill_graphs  # noqa: E501
    if torch.cuda.is_available():
        cuda = dict(kw, dtype=torch.float16)
        assert ModelRunner(model, "cuda", **cuda).prefill_graphs, "on by default with CUDA graphs"
        assert not ModelRunner(model, "cuda", cuda_graphs=False, **cuda).prefill_graphs
        monkeypatch.setenv("INLAID_PREFILL_GRAPHS", "0")
        assert not ModelRunner(model, "cuda", **cuda).prefill_graphs


def test_a_new_bucket_less_used_than_every_remembered_one_does_not_fail_the_step(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    """Review: with USES idle counts all above a new bucket's 1, trimming the idle counts dropped the new key itself
    and can_run raised KeyError (an engine step failure: every in-flight request aborted)."""
    import inlaid_worker.model.prefill_graphs as pg

    monkeypatch.setattr(pg, "USES", 2)
    g = _graphs(tmp_path, max_graphs=1)
    for _ in range(10):
        assert g.can_run(_chunk(16))
        g.run(None, _chunk(16))  # type: ignore[arg-type]
    for rows in (40, 100):  # two idle buckets asked for twice (not enough to replace the live one)
        assert not g.can_run(_chunk(rows)) and not g.can_run(_chunk(rows))
    assert not g.can_run(_chunk(300)), "a third idle bucket's first request runs eagerly"
    assert len([k for k in g._uses if k not in g._buckets]) <= 2
    assert g._uses[(384, 1, False)] == 1.0
