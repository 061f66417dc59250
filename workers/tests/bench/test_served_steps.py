"""bench/engine/served_steps.py (+ served_shape.py, served_report.py): how a served engine step is counted in the
simulator's cost terms, and one tiny CPU run of the real engine through a grid and a trace whose cost points
bench/sim/calibrate_h200.py --source-kind served fits; bench/sim/served-trace.js's segments and length cap."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[3]
ENGINE = ROOT / "bench" / "engine"


def _load_shape():  # type: ignore[no-untyped-def]
    """bench/engine/served_shape.py under a unique name, without putting bench/engine on sys.path (its report.py,
    plan.py and steps.py would shadow other benches' modules)."""
    spec = importlib.util.spec_from_file_location("bench_engine_served_shape", ENGINE / "served_shape.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_shape = _load_shape()
Counters, is_decode, one_off, step_path, step_shape = (_shape.Counters, _shape.is_decode, _shape.one_off,
                                                       _shape.step_path, _shape.step_shape)  # fmt: skip


def _chunk(prompt: int, outputs: int, start: int, n: int, adapter: str | None = "a"):  # type: ignore[no-untyped-def]
    seq = SimpleNamespace(adapter=adapter, num_prompt_tokens=prompt, num_tokens=prompt + outputs,
                          output_token_ids=[7] * outputs)  # fmt: skip
    return SimpleNamespace(seq=seq, start=start, num_tokens=n, samples=start + n == prompt + outputs)


def test_step_shape_counts_decode_rows_prefill_chunks_and_recomputes() -> None:
    decode = _chunk(100, 5, 104, 1, "a")  # the last output token: a decode row, context 105
    first_chunk = _chunk(300, 0, 0, 128, "b")  # a prompt chunk that does not sample
    last_token_of_prompt = _chunk(40, 0, 39, 1, None)  # one prompt token left: prefill, not decode
    recompute = _chunk(50, 10, 0, 60, "a")  # a preempted sequence's prompt + output again
    assert is_decode(decode) and not is_decode(last_token_of_prompt) and not is_decode(recompute)
    shape = step_shape([decode, first_chunk, last_token_of_prompt, recompute], 16)
    assert shape == dict(prefill_tokens=128 + 1 + 60, decode_seqs=1, distinct_adapters=2, rank=16,
                         kv_tokens=105 + 128 + 40 + 60, rows=4)  # fmt: skip
    assert step_shape([last_token_of_prompt], 16)["rank"] == 0  # base-model rows only: no adapter rank


def test_one_off_steps_and_paths() -> None:
    before = Counters(10, 1, 0, 3, 2)
    quiet = Counters(10, 1, 0, 4, 5).since(before)
    assert quiet == dict(compiles=0, decode_captures=0, prefill_captures=0, prefill_runs=1, adapter_loads=3, tunes=0)
    assert not one_off(quiet)  # adapter loads are a serving cost, not a start-up one
    assert one_off(Counters(11, 1, 0, 3, 2).since(before)) and one_off(Counters(10, 2, 0, 3, 2).since(before))
    assert one_off(Counters(10, 1, 0, 3, 2, tunes=1).since(before))  # an autotune run (new key) is start-up work
    assert step_path(dict(prefill_tokens=0), quiet) == "decode"
    assert step_path(dict(prefill_tokens=64), quiet) == "prefill-padded"
    assert step_path(dict(prefill_tokens=64), dict(quiet, prefill_runs=0)) == "prefill-eager"


def _trace(path: Path) -> list[dict]:
    rows = [dict(arrival_s=0.05 * i, task=f"task-{i % 3:03d}", prompt_tokens=20 + 37 * (i % 5), output_tokens=3 + i % 6)
            for i in range(14)]  # fmt: skip
    rows.append(dict(arrival_s=2.0, task="task-000", prompt_tokens=600, output_tokens=50))  # capped at --max-len 512
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_tiny_cpu_run_records_every_step_and_calibrates(tmp_path: Path) -> None:
    _trace(tmp_path / "t.jsonl")
    cmd = [sys.executable, str(ENGINE / "served_steps.py"), "--tiny", "--trace", str(tmp_path / "t.jsonl"),
           "--grid", "8:2:60,1:1:30", "--grid-decode", "3", "--out", str(tmp_path / "out")]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT / "workers"), "PATH": "/usr/bin:/bin"}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    (doc_path,) = (tmp_path / "out").glob("served-*.json")
    doc = json.loads(doc_path.read_text())
    steps, points, meta = doc["steps"], doc["cost_points"], doc["meta"]
    assert meta["run"]["stop"] == "trace done" and meta["run"]["added"] == 15 and meta["grid"]["grid_points"] == 2
    assert {s["phase"] for s in steps} == {"warmup", "grid", "trace"}
    assert len(points) == sum(1 for s in steps if not s["one_off"]) and all(s["one_off"] for s in steps if s["warmup"])
    kinds = {("mixed" if p["prefill_tokens"] and p["decode_seqs"] else "prefill" if p["prefill_tokens"] else "decode")
             for p in points}  # fmt: skip
    assert kinds == {"decode", "prefill", "mixed"}
    for p in points:
        assert p["step_s"] > 0 and p["kv_tokens"] >= p["decode_seqs"] + p["prefill_tokens"]
        assert 1 <= p["distinct_adapters"] <= 4 and p["rank"] == 16  # every request runs its task's adapter
    # 8 prompts of 60 tokens over 256-token steps: prefill, then mixed steps while the first rows decode
    grid_mixed = [s for s in steps if s["phase"] == "grid" and s["prefill_tokens"] and s["decode_seqs"]]
    assert grid_mixed and all(s["prefill_tokens"] <= 256 for s in steps if s["phase"] == "grid")
    grid_decode = [s for s in steps if s["phase"] == "grid" and s["decode_seqs"] == 8 and not s["prefill_tokens"]]
    assert grid_decode and all(s["distinct_adapters"] == 2 for s in grid_decode)
    trace_reqs = {k: r for k, r in doc["requests"].items() if k.startswith("r")}
    assert len(trace_reqs) == 15 and all(r["generated"] == r["output"] for r in trace_reqs.values())
    assert trace_reqs["r14"]["prompt"] + trace_reqs["r14"]["output"] == 512  # prompt kept, output cut
    # decode tokens in the recorded steps = tokens the requests generated after their first
    generated = sum(r["generated"] - 1 for k, r in doc["requests"].items())
    assert sum(s["decode_seqs"] for s in steps) == generated
    md = (tmp_path / "out" / doc_path.name.replace(".json", ".md")).read_text()
    assert "| trace | decode | decode |" in md
    for s in steps:  # the host phases add up to the step (served_steps.HostPhases); no CUDA events on the CPU
        assert min(s["pre_ms"], s["launch_ms"], s["post_ms"]) >= 0 and "fwd_gpu_ms" not in s
        assert abs(s["pre_ms"] + s["launch_ms"] + s["post_ms"] - 1e3 * s["step_s"]) < 1e-6
    # the tiny model's forward takes longer than scheduling it: over the run (one step's scheduling can be caught by
    # a busy machine: 5.9 ms against a 1.4 ms launch under pytest-xdist next to jest)
    assert sum(s["launch_ms"] for s in steps) > sum(s["pre_ms"] for s in steps)
    assert "| decode | 8 |" not in md and "| decode | 5-16 |" in md  # the rows table bins grid decode's 8 rows

    out = tmp_path / "fit.json"
    subprocess.run([sys.executable, str(ROOT / "bench/sim/calibrate_h200.py"), "--points", str(doc_path), "--out",
                    str(out), "--source-kind", "served", "--label", "tiny-served", "--compare",
                    str(ROOT / "libs/sim/calibration/h200-measured.json")], check=True, capture_output=True)  # fmt: skip
    fit = json.loads(out.read_text())
    assert fit["label"] == "tiny-served" and "Served steps: engine.step()" in fit["source"]
    assert all(fit[k] >= 0 for k in ("base_s", "prefill_token_s", "decode_row_s", "adapter_s", "kv_token_s"))
    assert fit["fit_error"]["n_points"] == len(points) and fit["measured"]["source_kind"] == "served"
    assert fit["compare"]["label"] == "h200-measured" and fit["compare"]["all"]["n"] == len(points)
    assert fit["compare"]["all"]["predicted_over_measured_time"] > 0


@pytest.mark.skipif(shutil.which("node") is None or not (ROOT / "libs/workload/dist/index.js").is_file(),
                    reason="needs node and the built libs/workload")  # fmt: skip
def test_served_trace_segments_follow_each_other_and_cap_lengths(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    subprocess.run(["node", str(ROOT / "bench/sim/served-trace.js"), "--tasks", "10", "--segments", "2:5,40:5",
                    "--max-len", "300", "--out", str(out)], check=True, capture_output=True)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    arrivals = [r["arrival_s"] for r in rows]
    assert arrivals == sorted(arrivals) and 0 <= arrivals[0] and arrivals[-1] < 10
    first, second = sum(1 for a in arrivals if a < 5), sum(1 for a in arrivals if a >= 5)
    assert second > 5 * first  # the second segment's rate is 20x the first's
    assert all(r["prompt_tokens"] + r["output_tokens"] <= 300 and r["output_tokens"] >= 1 for r in rows)
    assert any(r["prompt_tokens"] == 299 for r in rows) or max(r["prompt_tokens"] for r in rows) < 299
