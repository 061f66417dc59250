"""The decode graphs' per-bucket fusion choice (model.decode_graphs.FUSION_POLICY, the "auto" setting) and its
env override, and the fusion names (llama_fast: attention part + optional "+swiglu"). CPU only: nothing runs."""

from __future__ import annotations

import pytest
from inlaid_worker.model import decode_graphs as dg
from inlaid_worker.model.llama_fast import (
    ATTENTION_FUSIONS,
    DECODE_FUSIONS,
    attention_fusion,
    cfin_fused,
    dnorm2_fused,
    gsums_fused,
    norm_fused,
    qsums_fused,
    swiglu_fused,  # fmt: skip
)


def test_policy_picks_per_bucket_from_ascending_entries() -> None:
    policy = ((2, "swiglu"), (8, "none"), (16, "merge"))
    assert [dg.policy_fusion(b, policy) for b in (1, 2, 4, 8, 16, 24, 256)] == [
        "swiglu", "swiglu", "none", "none", "merge", "none", "none"]  # fmt: skip
    assert dg.policy_fusion(1, ()) == "none"


def test_shipped_policy_is_valid_and_ascending() -> None:
    tops = [top for top, _ in dg.FUSION_POLICY]
    assert tops == sorted(set(tops)) and all(top in dg.BUCKETS for top in tops)
    assert all(f in DECODE_FUSIONS for _, f in dg.FUSION_POLICY)
    assert all(dg.policy_fusion(b) in DECODE_FUSIONS for b in dg.BUCKETS)
    assert dg.policy_fusion(dg.BUCKETS[-1]) == "none"  # large batches: measured no gain from any fusion


def test_shipped_choice_is_the_measured_one() -> None:
    """swiglu+cfin+q+g+dn2 at batch 1 (session 21: -104 us a 7B step against swiglu+cfin+g, 8/8 rounds; that was
    0.995x swiglu+cfin, session 15, which was 0.967x / 0.965x swiglu, session 14),
    swiglu+cfin+q at batch 2 (0.972x swiglu+cfin, session 14; 0.982x more with the tcs deferral), cfin at 3-4 (0.987x
    none) and 5-8 (7B 0.992-0.993x none; merge+cfin, 0.978x on the 7B, was 1.014x on the 13B), merge+cfin at 9-16
    (batch 16 0.992x merge), none elsewhere (decode_graphs.FUSION_POLICY)."""
    assert {b: dg.policy_fusion(b) for b in dg.BUCKETS if b <= 32} == {
        1: "swiglu+cfin+q+g+dn2", 2: "swiglu+cfin+q", 4: "cfin", 8: "cfin", 16: "merge+cfin", 24: "none",
        32: "none"}  # fmt: skip


def test_fusion_env_default_auto_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INLAID_DECODE_FUSION", raising=False)
    assert dg.fusion_env() == dg.AUTO
    monkeypatch.setenv("INLAID_DECODE_FUSION", "Merge+SwiGLU")
    assert dg.fusion_env() == "merge+swiglu"
    monkeypatch.setenv("INLAID_DECODE_FUSION", "rotary")
    with pytest.raises(ValueError, match="decode fusion must be"):
        dg.fusion_env()


def test_fusion_names_split_into_attention_and_swiglu() -> None:
    assert set(ATTENTION_FUSIONS) <= set(DECODE_FUSIONS)
    assert {f: (attention_fusion(f), swiglu_fused(f)) for f in DECODE_FUSIONS} == {
        "none": ("none", False), "merge": ("merge", False), "rope": ("rope", False),
        "rope-vec": ("rope-vec", False), "swiglu": ("none", True), "merge+swiglu": ("merge", True),
        "rope+swiglu": ("rope", True), "tiles": ("tiles", False), "split": ("split", False),
        "norm": ("none", False), "norm+swiglu": ("none", True), "cfin": ("none", False),
        "swiglu+cfin": ("none", True), "cfin+q": ("none", False), "swiglu+cfin+q": ("none", True),
        "merge+cfin": ("merge", False), "swiglu+cfin+g": ("none", True), "swiglu+cfin+q+g": ("none", True),
        "swiglu+cfin+q+g+dn2": ("none", True)}  # fmt: skip
    assert [f for f in DECODE_FUSIONS if norm_fused(f)] == ["norm", "norm+swiglu"]


def test_deferred_norm2_name_parses_and_opts_out() -> None:
    """ "+dn2" (kernels.deferred_norm) rides on "swiglu+cfin+q+g" (qkv's r: the row attention reading its sums); it is
    bucket 1's only; the norm switch replaces it like "cfin"; INLAID_DECODE_FUSION=swiglu+cfin+g (today's path before
    session 21, and what "+dn2" falls back to) is a valid override for every bucket."""
    f = "swiglu+cfin+q+g+dn2"
    assert [x for x in DECODE_FUSIONS if dnorm2_fused(x)] == [f]
    assert (cfin_fused(f), gsums_fused(f), qsums_fused(f), norm_fused(f)) == (True, True, True, False)
    assert not dnorm2_fused("swiglu+cfin+q+g") and not dnorm2_fused("none")
    assert [b for b in dg.BUCKETS if dnorm2_fused(dg.policy_fusion(b))] == [1]
    assert dg.with_norm(f, True) == "norm+swiglu" and dg.with_norm(f, False) == f
    assert dg.check_fusion(f) == f and dg.check_fusion("swiglu+cfin+g") == "swiglu+cfin+g"


def test_fusion_env_opts_bucket_1_out_of_dn2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The override reaches the graphs' setting: DecodeGraphs.fusion_for gives the env's name at every bucket (the
    AUTO policy's "+dn2" at bucket 1 otherwise). (A DecodeGraphs' fusion logic only: nothing is captured.)"""
    graphs = object.__new__(dg.DecodeGraphs)
    graphs._norm, graphs._dn2 = None, True
    monkeypatch.setenv("INLAID_DECODE_FUSION", "swiglu+cfin+g")
    graphs._fusion = dg.fusion_env()
    assert [graphs.fusion_for(b) for b in (1, 2)] == ["swiglu+cfin+g", "swiglu+cfin+g"]
    monkeypatch.delenv("INLAID_DECODE_FUSION")
    graphs._fusion = dg.fusion_env()
    assert [graphs.fusion_for(b) for b in (1, 2)] == ["swiglu+cfin+q+g+dn2", "swiglu+cfin+q"]


def test_norm_env_adds_or_removes_the_norm_fusion(monkeypatch: pytest.MonkeyPatch) -> None:
    """INLAID_DECODE_NORM (strict on/off) adds "norm" to the AUTO policy's fusion where a name has it, or removes it;
    unset: the policy's fusion as it is."""
    assert [dg.with_norm(f, True) for f in ("none", "swiglu", "merge", "norm")] == ["norm", "norm+swiglu", "merge",
                                                                                    "norm"]  # fmt: skip
    assert [dg.with_norm(f, False) for f in ("norm", "norm+swiglu", "none")] == ["none", "swiglu", "none"]
    assert [dg.with_norm(f, True) for f in ("cfin", "swiglu+cfin")] == ["norm", "norm+swiglu"]  # norm replaces cfin
    assert [dg.with_norm(f, False) for f in ("cfin", "swiglu+cfin")] == ["cfin", "swiglu+cfin"]
    assert dg.with_norm("merge", None) == "merge"
    assert all(dg.with_norm(f, on) in DECODE_FUSIONS for f in DECODE_FUSIONS for on in (True, False, None))
    monkeypatch.setenv(dg.NORM_ENV, "maybe")
    with pytest.raises(ValueError, match=dg.NORM_ENV):
        dg.env_switch(dg.NORM_ENV)


def test_dn2_switch_takes_dn2_out_of_bucket_1_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """INLAID_DECODE_DN2 (DN2_ENV, strict on/off, default on): 0 takes "+dn2" and its "+q" out of the AUTO policy's
    bucket-1 name ("swiglu+cfin+g", what "+dn2" falls back to) and leaves every other bucket's (bucket 2 keeps its
    "+q"); INLAID_DECODE_NORM=1 still replaces either; an explicit INLAID_DECODE_FUSION is not touched."""
    assert dg.without_dn2("swiglu+cfin+q+g+dn2") == "swiglu+cfin+g"
    assert all(dg.without_dn2(f) == f for f in DECODE_FUSIONS if not dnorm2_fused(f))
    assert all(dg.without_dn2(f) in DECODE_FUSIONS for f in DECODE_FUSIONS)
    graphs = object.__new__(dg.DecodeGraphs)
    graphs._fusion, graphs._norm = dg.AUTO, None
    for raw, on in (("", True), ("1", True), (" On ", True), ("yes", True), ("0", False), ("off", False),
                    ("FALSE", False)):  # fmt: skip
        monkeypatch.setenv(dg.DN2_ENV, raw)
        graphs._dn2 = dg.dn2_env()
        assert graphs._dn2 is on, raw
        want = {b: dg.policy_fusion(b) for b in dg.BUCKETS}
        if not on:
            want[1] = "swiglu+cfin+g"
        assert {b: graphs.fusion_for(b) for b in dg.BUCKETS} == want, raw
    monkeypatch.delenv(dg.DN2_ENV)
    assert dg.dn2_env() is True
    graphs._dn2, graphs._norm = False, True
    assert [graphs.fusion_for(b) for b in (1, 2)] == ["norm+swiglu", "norm+swiglu"]
    graphs._norm, graphs._fusion = None, "swiglu+cfin+q+g+dn2"
    assert graphs.fusion_for(1) == "swiglu+cfin+q+g+dn2"  # (the switch edits the AUTO policy only)


@pytest.mark.parametrize("raw", ["2", "maybe", "of", "-1"])
def test_a_bad_dn2_switch_stops_the_worker_at_start(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                     raw: str) -> None:  # fmt: skip
    """A value other than on/off is an error naming the variable: from dn2_env, from config.check_gpu_env (a
    ConfigError) and from the worker's main before it loads a model (exit code 2)."""
    from inlaid_worker.config import ConfigError, check_gpu_env

    monkeypatch.setenv(dg.DN2_ENV, raw)
    with pytest.raises(ValueError, match=dg.DN2_ENV):
        dg.dn2_env()
    with pytest.raises(ConfigError, match=dg.DN2_ENV):
        check_gpu_env()
    if raw == "2":  # (once: the worker's start, as test_strict_env_switches does for the other settings)
        from inlaid_worker.server.__main__ import main

        assert main(["--model", "/nonexistent-model-dir"]) == 2
        assert dg.DN2_ENV in capsys.readouterr().err
    monkeypatch.setenv(dg.DN2_ENV, "0")
    check_gpu_env()  # (a good value passes)
