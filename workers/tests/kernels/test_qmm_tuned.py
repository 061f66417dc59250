"""Shipped tuner picks (kernels/qmm_tuned.py): the tables parse, every pick is still a candidate of today's
tuner for its shape, and a shipped pick is taken only when it is a candidate and the guard accepts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from inlaid_worker.kernels import qmm_tuned
from inlaid_worker.kernels import quant_matmul_config as qmc
from inlaid_worker.kernels.gptq_packing import GPTQWeight

TABLES = sorted(qmm_tuned.TUNED_DIR.glob("*.json"))


def test_a_table_ships_for_the_h200() -> None:
    assert qmm_tuned.TUNED_DIR / "nvidia-h200.json" in TABLES
    assert qmm_tuned.device_slug("NVIDIA H200") == "nvidia-h200"


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name)
def test_every_shipped_pick_is_a_current_candidate(path: Path) -> None:
    table = qmm_tuned.parse_table(json.loads(path.read_text()))
    assert table, f"{path.name} has no entries"
    for (dtype, mb, n, k, bits, group), cfg in table.items():
        cands = qmc.candidate_configs(mb, n, k, group, bits, getattr(torch, dtype))
        assert cfg in cands, f"{path.name}: {cfg} is no longer a candidate for m={mb} n={n} k={k}"


def test_config_round_trip_and_bad_entries() -> None:
    cfg = qmc.QMMConfig(8, 64, 128, 4, 4, 4, True, "tc2")
    assert qmm_tuned.config_from_dict(qmm_tuned.config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="lacks"):
        qmm_tuned.config_from_dict({"block_m": 1})


def test_no_shipped_pick_on_cpu_or_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert qmm_tuned.shipped_pick(torch.device("cpu"), torch.float16, 1, 4096, 4096, 4, 128) is None
    monkeypatch.setenv("INLAID_QMM_TUNED", "0")
    assert not qmm_tuned.enabled()
    monkeypatch.setenv("INLAID_QMM_TUNED", "1")
    assert qmm_tuned.enabled()


def _weight(k: int = 256, n: int = 128) -> GPTQWeight:
    qw = torch.zeros(k // 8, n, dtype=torch.int32)
    qz = torch.zeros(k // 128, n // 8, dtype=torch.int32)
    sc = torch.ones(k // 128, n, dtype=torch.float16)
    return GPTQWeight(qw, qz, sc, None, 4, 128, False, 1, k, n)


def test_shipped_pick_needs_candidate_and_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _weight()
    x2 = torch.zeros(1, 256, dtype=torch.float16)
    cands = qmc.candidate_configs(1, 128, 256, 128, 4, torch.float16)
    good, stale = cands[-1], qmc.QMMConfig(1, 8, 8, 1, 1, 1, False, "gemv")
    assert stale not in cands
    pick: list[qmc.QMMConfig | None] = [good]
    monkeypatch.setattr(qmm_tuned, "shipped_pick", lambda *a: pick[0])
    assert qmc._shipped(x2, w, 1, cands, lambda c: True) == good
    assert qmc._shipped(x2, w, 1, cands, lambda c: False) is None  # the guard refuses it: tune instead
    assert qmc._shipped(x2, w, 1, cands, lambda c: 1 / 0 > 0) is None  # it fails to run: tune instead
    pick[0] = stale
    assert qmc._shipped(x2, w, 1, cands, lambda c: True) is None  # no longer a candidate
    pick[0] = None
    assert qmc._shipped(x2, w, 1, cands, None) is None


def test_the_tuner_checks_candidates_on_a_finite_input_even_when_x_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live activations holding NaN/inf made the guard reject every candidate, the reference included, and the
    tuner fell back to dequantize + cuBLAS (13B random-weight decode, 2026-11-30). It now times and checks
    candidates on tuning_input(x), built once, leaving the global RNG alone."""
    from inlaid_worker.kernels import quant_matmul as qm

    seen: list[torch.Tensor] = []

    def product(x2: torch.Tensor, w: GPTQWeight, y: torch.Tensor) -> None:  # a torch stand-in for the kernels
        seen.append(x2)
        y.copy_(x2.float().sum(1, keepdim=True).expand_as(y))

    monkeypatch.setattr(qm, "dequant_matmul", product)
    monkeypatch.setattr(qm, "launch_quant_matmul", lambda x2, w, c, y: product(x2, w, y))
    w = _weight()
    x = torch.randn(3, 256).half()
    x[1, 7] = float("nan")
    x[2, 0] = float("inf")
    state = torch.get_rng_state()
    xt = qm.tuning_input(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert xt.shape == x.shape and xt.dtype == x.dtype and bool(torch.isfinite(xt).all())
    assert torch.equal(xt, qm.tuning_input(x.clone()))  # deterministic
    assert not qm._verify(x, w, qmc.DEQUANT)  # on x itself the reference disagrees with itself (NaN)
    seen.clear()
    run, verify = qm.tuning_calls(x, w)
    assert not seen  # nothing is built or run before the tuner asks
    assert verify(qmc.DEQUANT)
    run(qmc.DEQUANT)
    assert len(seen) == 3 and all(torch.equal(t, xt) for t in seen) and seen[0] is seen[2]
