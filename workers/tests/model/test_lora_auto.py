"""The decode graphs' per-step choice of LoRA kernels (model.kernel_lora.pick_grouped, session 18): the grouped
kernels (kernels.lora_grouped) where the step's LoRA rows share adapters enough, else the BGMV ones.

Shipped on (GROUPED AUTO) since session 19's H200 run of the GPU test below; the other tests set the setting they test.
CPU: the rule at its boundaries under each GROUPED setting; DecodeGraphs with fake graphs: a shared-adapter step and
a distinct-adapter step of one bucket replay different graphs (both kept, the grouped one captured on first need), a
base-only step never takes grouped; under Triton's interpreter (a subprocess) a tiny model's decode-graph body with
the grouped kernels gives the BGMV body's logits and the eager step's.
CUDA: a tiny runner's bucket-32 steps replay the grouped graph under the rule and give the BGMV graph's logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from factories import interpreted_json, make_lora_adapter, make_step, make_tiny_llama
from inlaid_worker.kernels.lora_grouped import MAX_ROWS
from inlaid_worker.model import decode_graphs, kernel_lora
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.decode_graphs import DecodeGraphs, _Graph
from inlaid_worker.model.kernel_lora import AUTO, MIN_ROWS, MIN_ROWS_PER_ADAPTER, pick_grouped

BS = 4


def test_the_rule_at_its_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_lora, "GROUPED", AUTO)
    assert (MIN_ROWS, MIN_ROWS_PER_ADAPTER) == (24, 4)
    assert pick_grouped([0] * 32, 32)  # one shared adapter (0.71-0.97x measured)
    assert not pick_grouped(list(range(32)), 32)  # one adapter per row (1.06-1.12x)
    assert pick_grouped([i % 8 for i in range(32)], 32)  # 4 rows per adapter: the threshold itself
    assert not pick_grouped([i % 9 for i in range(32)], 32)  # 32 rows < 4 x 9 adapters
    assert pick_grouped([3] * 24 + [-1] * 8, 32)  # base rows do not count; 24 LoRA rows: MIN_ROWS
    assert not pick_grouped([3] * 23 + [-1] * 9, 32)
    assert not pick_grouped([0] * 16, 16)  # below MIN_ROWS (unmeasured there: BGMV)
    assert not pick_grouped([-1] * 32, 32)  # a base-only step
    assert pick_grouped([0] * MAX_ROWS, MAX_ROWS) and not pick_grouped([0] * (MAX_ROWS + 1), MAX_ROWS + 16)
    monkeypatch.setattr(kernel_lora, "GROUPED", True)  # forced on: any LoRA step up to MAX_ROWS rows
    assert pick_grouped([0, 1, 2], 4) and pick_grouped(list(range(32)), 32)
    assert not pick_grouped([-1, -1], 2) and not pick_grouped([0] * 80, 80)
    monkeypatch.setattr(kernel_lora, "GROUPED", False)  # forced off
    assert not pick_grouped([0] * 32, 32)


def test_the_shipped_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule (AUTO) by default since session 19: it was lower in every round where it picks grouped at batch 32
    (0.709x, 0.987x) and unchanged where it picks BGMV (1.000x; bench/results/decode-2026-12-01-s18-lora-auto.md), and
    its GPU tests passed on the H200 (decode-2026-12-01-s19-lora.md); False (off) stays available."""
    assert kernel_lora.GROUPED is AUTO
    assert pick_grouped([0] * 32, 32) and not pick_grouped(list(range(32)), 32)
    monkeypatch.setattr(kernel_lora, "GROUPED", False)
    assert not pick_grouped([0] * 32, 32)


class _Pools:
    version = 0  # DecodeGraphs reads only this before a capture (the fake capture builds no LoRA context)


@pytest.fixture
def fake_graphs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[DecodeGraphs, list[str]]:
    log: list[str] = []
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)

    class Graph:
        def replay(self) -> None:
            log.append("replay")

    class Event:  # the staging copy's event (nothing to wait for on the CPU)
        def record(self, stream: Any = None) -> None: ...

        def synchronize(self) -> None: ...

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(decode_graphs, "new_event", Event)
    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, 16, BS, c.num_kv_heads, c.head_dim)
    g = DecodeGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, 2, _Pools(), buckets=(4, 32),  # type: ignore[arg-type]
                     pdl_mode=0)  # fmt: skip
    g.graph_input = 0

    def capture(weights: Any, graph: _Graph, b: int, with_lora: bool, fusion: str) -> _Graph:
        log.append(f"capture{b}-{'grouped' if graph.grouped else 'lora' if with_lora else 'base'}")
        return _Graph(graph.graph, graph.staging, torch.zeros(b, 5), (), grouped=graph.grouped)

    g._capture = capture  # type: ignore[method-assign]
    return g, log


def _decode(ids: list[int]) -> Any:
    return make_step([([3 + i % 5], 1, [i % 16], a) for i, a in enumerate(ids)], BS)


def test_the_step_mix_picks_the_graph(fake_graphs: tuple[DecodeGraphs, list[str]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    g, log = fake_graphs
    monkeypatch.setattr(kernel_lora, "GROUPED", AUTO)
    w = object()
    shared, distinct, base = [0] * 30, [i % 16 for i in range(30)], [-1] * 30
    for ids in (distinct, shared, distinct, shared, base):
        g.run(w, _decode(ids), host=False)
    assert log == ["capture32-lora", "replay", "capture32-grouped", "replay", "replay", "replay",
                   "capture32-base", "replay"]  # fmt: skip
    keys = sorted(g._graphs, key=str)
    assert [(k[0], k[1], k[5]) for k in keys] == [(32, False, False), (32, True, False), (32, True, True)]
    assert all(x.grouped == k[5] for k, x in g._graphs.items())  # the graph holds the kind its key says
    monkeypatch.setattr(kernel_lora, "GROUPED", True)  # forced on: a base-only step still never takes it
    g.run(w, _decode(base), host=False)
    g.run(w, _decode([0, 1, -1]), host=False)  # bucket 4: forced on takes any LoRA step
    assert log[-3:] == ["replay", "capture4-grouped", "replay"]
    monkeypatch.setattr(kernel_lora, "GROUPED", False)  # forced off: the shared step replays the BGMV graph
    g.run(w, _decode(shared), host=False)
    assert log[-1] == "replay" and len(g._graphs) == 4


def test_off_keeps_the_bgmv_graphs(fake_graphs: tuple[DecodeGraphs, list[str]],
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Off (GROUPED False) a shared-adapter step (which AUTO sends to grouped) replays the BGMV graph, as the
    distinct-adapter step does: one LoRA graph per bucket, as before session 18."""
    g, log = fake_graphs
    monkeypatch.setattr(kernel_lora, "GROUPED", False)
    w = object()
    for ids in ([0] * 30, [i % 16 for i in range(30)], [0] * 30):
        g.run(w, _decode(ids), host=False)
    assert log == ["capture32-lora", "replay", "replay", "replay"]
    assert [k[5] for k in g._graphs] == [False]


SCRIPT = r"""
import json, sys
sys.path[:0] = [TESTS, TESTS + "/kernels"]
import lora_decode_body
lora_decode_body.setup()

adapters = [(8, ("q_proj", "v_proj", "o_proj", "gate_proj", "down_proj")), (4, ("k_proj", "up_proj"))]
b = lora_decode_body.LoraBody.make(MODEL, adapters, [0, 1, 0])
eager = b.eager()
out = {grouped: b.body(grouped) for grouped in (False, True)}
base = b.eager([-1, -1, -1])
rel = lambda a, b: float((a - b).norm() / b.norm())
print(json.dumps(dict(lora_effect=rel(eager, base), grouped_bgmv=rel(out[True], out[False]), bgmv_eager=rel(out[False], eager),
                      grouped_eager=rel(out[True], eager))))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA: the test_gpu_ one below")
def test_grouped_body_equals_bgmv_under_the_interpreter(tmp_path: Path) -> None:
    """A tiny model's bucket-4 decode-graph body (3 rows: adapter 0 twice, adapter 1 once; a padding row) with the
    grouped LoRA kernels gives the BGMV body's logits and the eager step's."""
    model = make_tiny_llama(tmp_path / "m")
    tests = str(Path(__file__).resolve().parents[1])
    res = interpreted_json(f"TESTS = {tests!r}\nMODEL = {str(model)!r}\n" + SCRIPT, timeout=240)
    assert res["grouped_bgmv"] < 1e-4 and res["bgmv_eager"] < 1e-4 and res["grouped_eager"] < 1e-4, res
    assert res["lora_effect"] > 0.05, res  # the adapters move these logits (the same step on the base model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_rule_replays_the_grouped_graph_with_bgmvs_logits(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Bucket 32 on a tiny runner: a step of one shared adapter and one of 4 adapters x 8 rows take the grouped graph
    under the rule and give the BGMV graph's logits (same KV state); 32 rows of 32 distinct slots are not possible with
    4 slots, so the BGMV pick is the step with 16 LoRA rows (under MIN_ROWS)."""
    from inlaid_worker.model.runner import ModelRunner

    runner = ModelRunner(make_tiny_llama(tmp_path / "m"), device="cuda", dtype=torch.float16, num_kv_blocks=160,
                         block_size=BS, backend="triton", max_adapters=4)  # fmt: skip
    for i in range(4):
        adapter = make_lora_adapter(runner.config, rank=8 * (1 + i % 2), targets=("q_proj", "v_proj", "down_proj"),
                                    seed=i + 1)  # fmt: skip
        runner.add_adapter(f"a{i}", adapter)
    dg = runner._graphs
    assert dg is not None
    n = 32
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randint(3, 300, (11,), generator=gen).tolist() for _ in range(n)]
    tables = [list(range(i * 4, i * 4 + 4)) for i in range(n)]
    runner.execute_device(make_step([(s[:10], 0, tables[i], -1) for i, s in enumerate(seqs)], BS))
    snap = runner.kv_cache.clone()
    seen: list[tuple] = []

    class Logged(dict):  # the keys the steps look up (the graph each replays)
        def get(self, key: Any, default: Any = None) -> Any:
            seen.append(key)
            return super().get(key, default)

    dg._graphs = Logged(dg._graphs)
    mixes = {"shared": [1] * n, "four": [i % 4 for i in range(n)], "half": [i % 4 if i % 2 else -1 for i in range(n)]}
    for name, ids in mixes.items():
        step = make_step([(s[10:], 10, tables[i], ids[i]) for i, s in enumerate(seqs)], BS)
        out, kinds = {}, {}
        for setting in (False, AUTO, False, AUTO):  # (the second pass replays the captured graphs)
            monkeypatch.setattr(kernel_lora, "GROUPED", setting)
            runner.kv_cache.copy_(snap)
            seen.clear()
            out[setting] = runner.execute_device(step).float().cpu()
            (key,) = seen
            assert key[0] == 32 and key[1] and key in dg._graphs
            kinds.setdefault(setting, set()).add(key[5])
        assert kinds == {False: {False}, AUTO: {name != "half"}}, (name, kinds)
        torch.testing.assert_close(out[AUTO], out[False], rtol=2e-2, atol=2e-2)
    assert sorted(k[5] for k in dg._graphs if k[0] == 32 and k[1]) == [False, True]  # one graph of each kind
