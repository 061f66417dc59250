"""The quantize command: progress per layer, clear errors with exit status 2 and no output left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Tiny
from inlaid_worker.quant.cli import main


def _calib(path: Path) -> Path:
    lines = [{"text": "The capital of France is Paris."},
             {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_cli_quantizes_with_progress(tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = _calib(tmp_path / "calib.jsonl")
    args = ["--model", str(tiny.base), "--method", "mlgptq", "--bits", "3", "--group-size", "32",
            "--task", f"a={tiny.adapters['a']}:{calib}", "--task", f"b={tiny.adapters['b']}:{calib}",
            "--out", str(tmp_path / "q"), "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "layer 1/2" in out and "layer 2/2" in out
    assert json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]["bits"] == 3


def test_cli_refuses_bad_input(tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = _calib(tmp_path / "calib.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": 1}\n')
    base = ["--model", str(tiny.base), "--method", "mlgptq", "--group-size", "32", "--out", str(tmp_path / "q")]
    cases = [
        (["--bits", "5", "--task", f"a={tiny.adapters['a']}:{calib}"], "bits"),
        (["--task", f"a={tiny.adapters['a']}:{tmp_path / 'missing.jsonl'}"], "not found"),
        (["--task", f"a={tiny.adapters['a']}:{tmp_path / 'bad.jsonl'}"], "expected"),
        (["--task", f"a={tmp_path / 'nope'}:{calib}"], "does not exist"),
        (["--task", "a"], "name=ADAPTER_DIR:CALIB.jsonl"),
    ]
    for extra, msg in cases:
        assert main(base + extra) == 2
        assert msg in capsys.readouterr().err
        assert not (tmp_path / "q").exists() and not list(tmp_path.glob(".q.partial*"))
