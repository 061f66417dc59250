"""Background limits: validation, and the pacer keeping work at most `share` of wall time."""

from __future__ import annotations

import time

import pytest
from inlaid_worker.onboard.background import BackgroundLimits, Pacer


@pytest.mark.parametrize("kw", [{"mode": "fork"}, {"nice": 20}, {"nice": -1}, {"threads": 0}, {"max_share": 0.0},
                                {"max_share": 1.5}])
def test_limits_reject_bad_values(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BackgroundLimits(**kw)  # type: ignore[arg-type]


def test_pacer_sleeps_in_proportion_to_work() -> None:
    pacer = Pacer(0.25)
    t0 = time.perf_counter()
    for _ in range(3):
        busy = time.perf_counter() + 0.02
        while time.perf_counter() < busy:
            pass
        pacer.pause()
    wall = time.perf_counter() - t0
    assert pacer.slept >= 3 * 0.02 * 3 * 0.99  # (1 / 0.25 - 1) = 3x the work
    assert wall >= 0.24
    assert Pacer(1.0).pause() == 0.0


def test_quantizer_threads_default_to_a_quarter_of_the_cores_or_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("INLAID_QUANTIZER_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert BackgroundLimits().threads == max(1, min(8, cores // 4))
    monkeypatch.setenv("INLAID_QUANTIZER_THREADS", "3")
    assert BackgroundLimits().threads == 3
    monkeypatch.setenv("INLAID_QUANTIZER_THREADS", "0")
    with pytest.raises(ValueError, match="INLAID_QUANTIZER_THREADS"):
        BackgroundLimits()


def test_quantizer_max_share_comes_from_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INLAID_QUANTIZER_MAX_SHARE", raising=False)
    assert BackgroundLimits().max_share == 1.0
    monkeypatch.setenv("INLAID_QUANTIZER_MAX_SHARE", "0.5")
    assert BackgroundLimits().max_share == 0.5
    for bad in ("0", "1.5", "half"):
        monkeypatch.setenv("INLAID_QUANTIZER_MAX_SHARE", bad)
        with pytest.raises(ValueError, match="max_share|INLAID_QUANTIZER_MAX_SHARE"):
            BackgroundLimits()
