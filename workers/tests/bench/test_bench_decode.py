"""bench/engine/bench_decode.py: the plan's order and time budget, 3-/4-bit roofline bytes, the report's shape
columns, and one small run (two tiny shapes, int3 and fp16, PEFT on one shape) on the CPU under Triton's
interpreter (a subprocess: the interpreter must be on before triton is imported)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
ENGINE = ROOT / "bench" / "engine"


def _load(name: str) -> ModuleType:
    """A bench/engine module under a unique name (bench/quality has its own report.py)."""
    sys.path.insert(0, str(ENGINE))  # for their sibling imports (llama_shapes)
    spec = importlib.util.spec_from_file_location(f"bench_engine_{name}", ENGINE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_plan_puts_base_batches_then_the_32_adapter_point_first() -> None:
    plan = _load("plan")
    points = plan.decode_points([1, 32, 256], [8, 16], ["qkvo", "all"], [1, 8, 32, 64], 32, True)
    first, rest = plan.phases(points, 32)
    assert first == [(0, "-", 1, 0), (0, "-", 32, 0), (0, "-", 256, 0), (16, "qkvo", 32, 32),
                     (16, "qkvo", 32, 1), (16, "qkvo", 32, 8)]  # fmt: skip
    assert set(first) | set(rest) == set(points) and not set(first) & set(rest)
    assert (16, "qkvo", 256, 64) in rest and (8, "all", 32, 32) in rest and (16, "qkvo", 32, 64) not in points


def test_budget_refuses_and_counts_after_the_limit() -> None:
    plan = _load("plan")
    assert plan.Budget(0.0, t0=0.0).allows()  # 0 = no limit, however late
    late = plan.Budget(5.0, t0=0.0)
    assert not late.allows(3) and not late.allows() and late.skipped == 4
    assert plan.Budget(3600.0).allows()


def _packed_bytes(k: int, n: int, bits: int) -> int:
    """qweight [K*bits/32, N] int32 + qzeros [K/128, ceil(N*bits/32)] int32 + fp16 scales [K/128, N]."""
    g = min(128, k)
    return k * bits // 32 * n * 4 + k // g * -(-n * bits // 32) * 4 + k // g * n * 2


@pytest.mark.parametrize("bits", [3, 4])
def test_roofline_counts_packed_bytes(bits: int, tmp_path: Path) -> None:
    from inlaid_worker.model.config import load_model_config

    rm = _load("random_model")
    shape = rm.SHAPES["tiny-mha"]
    c = load_model_config(rm.write_config(shape, tmp_path))
    weights = lambda quant: rm.random_weights(c, quant, torch.device("cpu"), torch.float16)  # noqa: E731
    quant, dense = weights(f"int{bits}"), weights("fp16")
    h, inter = shape.hidden, shape.intermediate
    linears = [(h, 3 * h), (h, h), (h, 2 * inter), (inter, h)]  # (K, N) of qkv, o, gate_up, down (MHA)
    per_layer_dense = sum(k * n * 2 for k, n in linears)
    other = rm.weight_bytes(dense, 4) - shape.layers * per_layer_dense  # norms, LM head, embedding rows
    expected = other + shape.layers * sum(_packed_bytes(k, n, bits) for k, n in linears)
    assert rm.weight_bytes(quant, 4) == expected
    assert quant.layers[0].down.parts[0].qweight.shape == (inter * bits // 32, h)


def test_report_has_a_shape_column_and_goals_per_shape() -> None:
    report = _load("report")
    rows = [dict(kind="decode", shape=s, quant=q, backend="triton", rank=0, targets="-", batch=1, distinct=0,
                 step_ms=ms, roofline_ms=1.0, bytes=1, tokens_per_s=1e3 / ms, fusion="none")
            for s, q, ms in (("7b", "int4", 2.0), ("13b", "int4", 3.0), ("13b", "int3", 2.5))]  # fmt: skip
    rows.append(dict(rows[1], rank=16, targets="qkvo", batch=1, distinct=1, step_ms=3.3))
    md = report.to_markdown(dict(date="d", command="c", device="x", torch="t", dtype="f16", context=8,
                                 shapes={"7b": {}, "13b": {}}, copy_GBps=1.0), rows)  # fmt: skip
    assert "- 7b: decode at batch 1: 2.00x the roofline" in md and "- 13b: decode at batch 1: 3.00x" in md
    assert "| 13b | int3 | triton | none | - | 0 | 1 | 0 | 2.50 |" in md
    assert "| 13b | int4 | triton | none | qkvo | 16 | 1 | 1 | 3.30 | 1.000 | 3.3 | 1.10 |" in md  # vs its own base


def test_tiny_run_two_shapes_int3_fp16_on_the_interpreter(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ENGINE / "bench_decode.py"), "--out", str(tmp_path), "--tiny", "--device", "cpu",
           "--shapes", "tiny,tiny-mha", "--quants", "int3,fp16", "--batches", "1", "--ranks", "16",
           "--targets", "qkvo", "--distinct", "1", "--lora-batch", "1", "--per-batch-lora", "0",
           "--prefill-seqs", "1", "--prompt", "2", "--context", "8", "--warmup", "0", "--reps", "1",
           "--cost-points", "0", "--peft", "1:1", "--peft-shapes", "tiny-mha", "--peft-new-tokens", "2",
           "--max-seconds", "300", "--tag", "t"]  # fmt: skip
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT / "workers"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(next(tmp_path.glob("decode-*-t.json")).read_text())
    rows = doc["rows"]
    for shape in ("tiny", "tiny-mha"):
        for quant in ("int3", "fp16"):
            mine = [r for r in rows if r.get("shape") == shape and r.get("quant") == quant]
            assert {(r["kind"], r["rank"], r["batch"]) for r in mine} == {
                ("decode", 0, 1), ("decode", 16, 1), ("prefill", 0, 1), ("prefill", 16, 1)}, (shape, quant)  # fmt: skip
    assert [r["shape"] for r in rows if r["kind"] == "peft"] == ["tiny-mha"]
    base = {(r["shape"], r["quant"]): r["bytes"] for r in rows if r["kind"] == "decode" and r["rank"] == 0}
    assert base[("tiny", "int3")] < base[("tiny", "fp16")] and base[("tiny-mha", "int3")] < base[("tiny-mha", "fp16")]
    assert [r["t_s"] for r in rows] == sorted(r["t_s"] for r in rows)
    assert doc["meta"]["skipped"] == 0 and set(doc["meta"]["shapes"]) == {"tiny", "tiny-mha"}
    md = next(tmp_path.glob("decode-*-t.md")).read_text()
    assert "| tiny-mha | int3 | torch |" in md and "| tiny-mha | engine | int3 | 1 (16) | 2 |" in md


def test_no_prefill_rows_with_zero_prefill_seqs() -> None:
    """`--prefill-seqs 0` used to crash the run after its decode rows (2026-11-30, H200)."""
    import argparse

    bench = _load("bench_decode")
    logged: list[dict] = []
    args = argparse.Namespace(prefill_seqs=0, prompt=512, distinct=[8], warmup=1, reps=2)
    bench.prefill_rows(args, None, 0, "7b", "int4", logged.append, None)  # runner and budget are never touched
    assert logged == []
