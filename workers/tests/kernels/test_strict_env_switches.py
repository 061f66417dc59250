"""The PDL / ring-balance switches INLAID_PDL_LORA, INLAID_PDL_TCG and INLAID_TCG_BALANCE take 1/on/true/yes or
0/off/false/no (env_switch): a typo is an error naming the variable, not "on"; INLAID_PDL_MAX_BUCKET an integer. A
switch a kernel module reads at import (quant_tcg, imported late, inside the tuner) fails the tuner, not a candidate."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
import torch
from inlaid_worker.env_switch import EnvSwitchError
from inlaid_worker.kernels import quant_matmul_config as qmc
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.model.decode_graphs import PDL_MAX_BUCKET, pdl_policy_env

TYPOS = ("2", "flase", "of", "enabled", "none")


def test_pdl_policy_env_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INLAID_PDL_MAX_BUCKET", raising=False)
    monkeypatch.delenv("INLAID_PDL_LORA", raising=False)
    assert pdl_policy_env() == (PDL_MAX_BUCKET, True)
    for raw, want in (("0", False), ("off", False), ("No", False), ("FALSE", False), ("1", True), ("on", True),
                      (" yes ", True), ("", True)):  # fmt: skip
        monkeypatch.setenv("INLAID_PDL_LORA", raw)
        assert pdl_policy_env() == (PDL_MAX_BUCKET, want), raw
    for raw in TYPOS:
        monkeypatch.setenv("INLAID_PDL_LORA", raw)
        with pytest.raises(ValueError, match="INLAID_PDL_LORA"):
            pdl_policy_env()
    monkeypatch.setenv("INLAID_PDL_LORA", "0")
    monkeypatch.setenv("INLAID_PDL_MAX_BUCKET", "8")
    assert pdl_policy_env() == (8, False)
    monkeypatch.setenv("INLAID_PDL_MAX_BUCKET", "sixteen")
    with pytest.raises(ValueError, match="INLAID_PDL_MAX_BUCKET"):
        pdl_policy_env()


def _fresh_quant_tcg() -> ModuleType:
    """A private copy of kernels.quant_tcg, executed now (its switches are read at import); the imported module, which
    other modules and tests hold, is left alone."""
    import inlaid_worker.kernels.quant_tcg as real

    name = "inlaid_worker.kernels._quant_tcg_env_probe"
    spec = importlib.util.spec_from_file_location(name, real.__file__)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # Gluon's decorators look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[name]
    return mod


def test_quant_tcg_switches_are_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INLAID_PDL_TCG", raising=False)
    monkeypatch.delenv("INLAID_TCG_BALANCE", raising=False)
    mod = _fresh_quant_tcg()
    assert mod._PDL is True and mod.BALANCE is True  # both on by default
    monkeypatch.setenv("INLAID_PDL_TCG", "off")
    monkeypatch.setenv("INLAID_TCG_BALANCE", "0")
    mod = _fresh_quant_tcg()
    assert mod._PDL is False and mod.BALANCE is False
    monkeypatch.setenv("INLAID_PDL_TCG", "Yes")
    monkeypatch.setenv("INLAID_TCG_BALANCE", "true")
    mod = _fresh_quant_tcg()
    assert mod._PDL is True and mod.BALANCE is True
    for var in ("INLAID_PDL_TCG", "INLAID_TCG_BALANCE"):
        for raw in TYPOS[:2]:
            monkeypatch.setenv(var, raw)
            with pytest.raises(EnvSwitchError, match=var):
                _fresh_quant_tcg()
            monkeypatch.setenv(var, "1")


class _FakeCudaX:
    def __init__(self, m: int, k: int) -> None:
        self.shape, self.is_cuda, self.device, self.dtype = (m, k), True, torch.device("cuda", 0), torch.float16


def test_the_tuner_raises_a_bad_switch_instead_of_skipping_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate that fails is skipped (e.g. out of shared memory), but an EnvSwitchError (quant_tcg's import with a
    mistyped switch) stops the tuner, in the shipped-pick check and in the timing loop."""
    k, n = 4096, 4096
    w = GPTQWeight(torch.zeros(k // 8, 8, dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                   torch.zeros(1, 8, dtype=torch.float16), None, 4, 128, False, 1, k, n)  # fmt: skip
    x2 = _FakeCudaX(8, k)
    cands = qmc.candidate_configs(8, n, k, 128, 4, torch.float16)
    tc = next(c for c in cands if c.kind == "tc2")

    def bad_switch(c: qmc.QMMConfig) -> bool:
        raise EnvSwitchError("INLAID_PDL_TCG must be 1/on/true/yes or 0/off/false/no, got 'flase'")

    from inlaid_worker.kernels import qmm_tuned

    monkeypatch.setattr(qmm_tuned, "shipped_pick", lambda *a: tc)
    with pytest.raises(EnvSwitchError, match="INLAID_PDL_TCG"):
        qmc._shipped(x2, w, 8, cands, bad_switch)  # type: ignore[arg-type]
    assert qmc._shipped(x2, w, 8, cands, lambda c: 1 / 0 > 0) is None  # any other failure: tune instead

    monkeypatch.setattr(qmm_tuned, "shipped_pick", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(qmc, "hopper_device", lambda device: True)
    monkeypatch.setattr(qmc, "time_cold_ms", lambda fn, device: fn() or 1.0)
    monkeypatch.setattr(qmc, "TUNE_LOG", {})

    def run(c: qmc.QMMConfig) -> None:
        if qmc.hopper_only(c.kind):
            raise RuntimeError("out of resources")  # skipped: the tuner goes on

    monkeypatch.setattr(qmc, "_TUNED", {})
    assert not qmc.hopper_only(qmc.pick_config(x2, w, run, lambda c: True).kind)  # type: ignore[arg-type]

    def run_bad(c: qmc.QMMConfig) -> None:
        if qmc.hopper_only(c.kind):
            bad_switch(c)

    monkeypatch.setattr(qmc, "_TUNED", {})
    with pytest.raises(EnvSwitchError, match="INLAID_PDL_TCG"):
        qmc.pick_config(x2, w, run_bad, lambda c: True)  # type: ignore[arg-type]


def test_the_worker_checks_every_switch_at_start() -> None:
    """A mistyped switch stops the worker's start (config.load_config: ConfigError naming the variable, exit 2), not
    the first step that happens to read it (review of session 12); SWITCHES lists every switch the package reads."""
    import re
    from pathlib import Path

    import inlaid_worker
    from inlaid_worker.config import ConfigError, load_config
    from inlaid_worker.env_switch import SWITCHES
    from inlaid_worker.model.decode_graphs import NORM_ENV

    root = Path(inlaid_worker.__file__).parent
    read = {m for p in root.rglob("*.py") for m in re.findall(r'env_switch\(\s*"([A-Z0-9_]+)"', p.read_text())}
    assert read and read | {NORM_ENV} == set(SWITCHES)
    for name in SWITCHES:
        assert load_config([], {name: "Off"}).port > 0
        with pytest.raises(ConfigError, match=name):
            load_config([], {name: "of"})


@pytest.mark.parametrize("name,value", [("INLAID_PDL", "maybe"), ("INLAID_PDL_MAX_BUCKET", "sixteen"),
                                        ("INLAID_DECODE_FUSION", "rotary"), ("INLAID_PREFILL_GRAPH_MAX_TOKENS", "1k"),
                                        ("INLAID_QMM_TUNED", "of"), ("INLAID_GRAPH_INPUT", "3")])  # fmt: skip
def test_a_bad_gpu_setting_stops_the_worker_at_start(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                      name: str, value: str) -> None:  # fmt: skip
    """The worker's main exits with code 2 and the variable's name before it loads a model (final read, session
    12): valued settings too, not only the on/off switches."""
    from inlaid_worker.server.__main__ import main

    monkeypatch.setenv(name, value)
    assert main(["--model", "/nonexistent-model-dir"]) == 2
    assert name in capsys.readouterr().err


def test_a_bad_graph_input_mode_stops_the_worker_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """INLAID_GRAPH_INPUT is parsed by check_gpu_env (the worker's start): a bad value is a ConfigError naming it."""
    from inlaid_worker.config import ConfigError, check_gpu_env

    monkeypatch.setenv("INLAID_GRAPH_INPUT", "2")
    check_gpu_env()
    for raw in ("3", "4", "two"):  # 3: session 17's greedy-in-graph mode, removed in session 18
        monkeypatch.setenv("INLAID_GRAPH_INPUT", raw)
        with pytest.raises(ConfigError, match="INLAID_GRAPH_INPUT"):
            check_gpu_env()
