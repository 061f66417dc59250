"""bench/quality/table.py: per-task mean/std over seeds and the mean relative drop against unquantized."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "quality"))
from table import cell_key, markdown, summarize


def test_summary_mean_std_and_relative_drop() -> None:
    cells = {
        cell_key("fp", None, None, "a"): 50.0,
        cell_key("fp", None, None, "b"): 20.0,
        cell_key("rtn", 4, None, "a"): 40.0,  # drop 20%
        cell_key("rtn", 4, None, "b"): 20.0,  # drop 0%
        cell_key("mlgptq", 4, 0, "a"): 50.0,
        cell_key("mlgptq", 4, 0, "b"): 18.0,  # seed 0: drops 0%, 10% -> 5%
        cell_key("mlgptq", 4, 1, "a"): 45.0,
        cell_key("mlgptq", 4, 1, "b"): 20.0,  # seed 1: drops 10%, 0% -> 5%
        cell_key("rtn", 3, None, "a"): 0.0,  # other bit width: ignored for 4-bit
    }
    s = summarize(cells, ["a", "b"], 4)
    assert list(s) == ["fp", "mlgptq", "rtn"]
    assert s["rtn"]["mean_rel_drop"] == pytest.approx(10.0)
    assert s["mlgptq"]["mean_rel_drop"] == pytest.approx(5.0) and s["mlgptq"][
        "std_rel_drop"
    ] == pytest.approx(0.0)
    mean, std, n = s["mlgptq"]["tasks"]["a"]
    assert (mean, n) == (47.5, 2) and std == pytest.approx(3.5355, abs=1e-3)
    md = markdown(s, ["a", "b"], {"a": "acc", "b": "bleu"}, 4, 64)
    assert "| MLGPTQ | 47.50 ± 3.54 | 19.00 ± 1.41 | 5.00% ± 0.00 |" in md
    assert "| RTN | 40.00 | 20.00 | 10.00% ± 0.00 |" in md


def test_lower_is_better_metric_reports_relative_increase() -> None:
    cells = {
        cell_key("fp", None, None, "a"): 2.0,
        cell_key("fp", None, None, "b"): 1.0,
        cell_key("rtn", 3, None, "a"): 3.0,  # NLL +50%
        cell_key("rtn", 3, None, "b"): 1.1,  # NLL +10%
    }
    s = summarize(cells, ["a", "b"], 3, lower_is_better=True)
    assert s["rtn"]["mean_rel_drop"] == pytest.approx(30.0)
    assert summarize(cells, ["a", "b"], 3)["rtn"]["mean_rel_drop"] == pytest.approx(-30.0)
    md = markdown(s, ["a", "b"], {"a": "answer NLL", "b": "answer NLL"}, 3, 64, "mean rel. NLL increase")
    assert "| RTN | 3.00 | 1.10 | 30.00% ± 0.00 |" in md and "mean rel. NLL increase |" in md


def test_task_with_zero_unquantized_score_is_left_out_of_the_drop() -> None:
    cells = {
        cell_key("fp", None, None, "a"): 50.0,
        cell_key("fp", None, None, "z"): 0.0,  # no relative drop defined
        cell_key("rtn", 3, None, "a"): 25.0,
        cell_key("rtn", 3, None, "z"): 0.0,
    }
    assert summarize(cells, ["a", "z"], 3)["rtn"]["mean_rel_drop"] == pytest.approx(50.0)
