"""The decode fusions of the triton forward (llama_fast.DECODE_FUSIONS: none, merge, rope) give the same decode
step: on the CPU one step of the tiny model under Triton's interpreter (decode_fusion_case.py, a subprocess:
TRITON_INTERPRET must be set before triton is imported); on a GPU, CUDA-graph runners of each fusion against the
torch reference backend over several steps and buckets, and switching a runner's fusion drops its graphs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.llama_fast import DECODE_FUSIONS, DEFAULT_DECODE_FUSION, DecodeLayout
from inlaid_worker.model.runner import ModelRunner

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


def test_layout_validates_the_fusion() -> None:
    assert DEFAULT_DECODE_FUSION in DECODE_FUSIONS
    lens = torch.ones(1, dtype=torch.int32)
    with pytest.raises(ValueError, match="must be one of"):
        DecodeLayout(lens[:, None], lens, 1, "rotary")
    with pytest.raises(ValueError, match="positions and inv_freq"):
        DecodeLayout(lens[:, None], lens, 1, "rope")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU test below covers it on CUDA")
def test_fusions_match_unfused_step_interpreted(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "model")
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), str(TESTS / "kernels"), str(HERE)])
    env = dict(os.environ, PYTHONPATH=path, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(HERE / "decode_fusion_case.py"), str(model)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"decode fusion case failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(res) == set(DECODE_FUSIONS)
    for fusion, r in res.items():
        assert r["finite"] == 1.0, (fusion, r)
        assert r["vs_none"] < 1e-5 and r["cache_vs_none"] < 1e-6, (fusion, r)  # fp32: rounding only
        assert r["vs_reference"] < 1e-5 and r["cache_vs_reference"] < 1e-6, (fusion, r)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_fusions_match_reference(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "m")
    kw = dict(device="cuda", dtype=torch.float16, num_kv_blocks=64, block_size=4, max_adapters=4)
    ref = ModelRunner(model, backend="torch", **kw)
    runners = {f: ModelRunner(model, backend="triton", decode_fusion=f, **kw) for f in DECODE_FUSIONS}
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 300, (40,), generator=g).tolist() for _ in range(5)]
    tables = [list(range(i * 12, i * 12 + 12)) for i in range(5)]
    errs: dict[str, list[float]] = {f: [] for f in runners}

    def step(chunks):  # type: ignore[no-untyped-def]
        want = ref.execute(make_step(chunks, 4))
        for f, r in runners.items():
            errs[f].append(float((r.execute(make_step(chunks, 4)) - want).norm() / want.norm()))

    step([(s[:20], 0, tables[i], -1) for i, s in enumerate(seqs)])  # prefill (eager)
    for pos in range(20, 26):  # 5, 3 (bucket 4: a padding row), 1 sequence
        live = range(5) if pos < 22 else range(3) if pos < 24 else range(1)
        step([([seqs[i][pos]], pos, tables[i], -1) for i in live])
    assert all(r.graph_captures >= 3 for r in runners.values()), {f: r.graph_captures for f, r in runners.items()}
    assert all(max(e) < 2e-2 for e in errs.values()), errs
    gaps = [abs(a - b) for a, b in zip(errs["rope"], errs["none"], strict=True)]
    assert max(gaps) < 5e-3, errs
    r = runners["none"]
    before = r.graph_captures
    r.decode_fusion = "rope"  # drops the graphs: the next step captures again, with the new fusion
    r.execute(make_step([([seqs[0][26]], 26, tables[0], -1)], 4))
    assert r.decode_fusion == "rope" and r.graph_captures == before + 1
