"""bench/sim/cost_fit.py and kv_budget.py: the H200 cost-model fitter recovers known constants from synthetic
points in the engine benchmark's schema, reports held-out error honestly, and the KV arithmetic is right."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_SIM = Path(__file__).resolve().parents[3] / "bench" / "sim"
sys.path.insert(0, str(BENCH_SIM))
from cost_fit import choose_and_fit, nnls, parse_points, project, split  # noqa: E402
from kv_budget import LLAMA2_7B, kv_budget, kv_bytes_per_token, weight_bytes  # noqa: E402

TRUE = {
    "base_s": 0.008,
    "prefill_token_s": 4e-5,
    "decode_row_s": 6e-5,
    "adapter_s": 2e-4,
    "kv_token_s": 1e-7,
    "prefill_step_s": 0.03,
}
LORA = 1e-5  # per adapted token at rank 16


def synthetic(noise: float = 0.0, seed: int = 0, hinge: float = 0.0) -> list[dict]:
    """The benchmark's grid: decode batches x adapters 0/1/8/32 x context 256/1024, prefill chunks, mixed."""
    rng = np.random.default_rng(seed)
    pts = []

    def add(prefill: int, seqs: int, adapters: int, rank: int, kv: int) -> None:
        t = (
            TRUE["base_s"]
            + prefill * TRUE["prefill_token_s"]
            + seqs * TRUE["decode_row_s"]
            + adapters * TRUE["adapter_s"]
        )
        t += (
            kv * TRUE["kv_token_s"]
            + (LORA * (prefill + seqs) * rank / 16 if adapters else 0)
            + hinge * max(0, seqs - 64)
            + (TRUE["prefill_step_s"] if prefill else 0.0)
        )
        pts.append(
            dict(
                prefill_tokens=prefill,
                decode_seqs=seqs,
                distinct_adapters=adapters,
                rank=rank,
                kv_tokens=kv,
                step_s=t * (1 + noise * rng.standard_normal()),
            )
        )

    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for a in (0, 1, 8, 32):
            if a <= b:
                for ctx in (256, 1024):
                    add(0, b, a, 16 if a else 0, b * ctx)
    for rank in (8, 32, 64):
        add(0, 32, 8, rank, 32 * 256)
    for chunk in (128, 512, 2048):
        for a in (0, 1):
            add(chunk, 0, a, 16 if a else 0, chunk)
    for b in (16, 64):
        add(512, b, 8, 16, 512 + b * 256)
    return pts


def test_recovers_exact_constants_and_picks_the_full_model():
    res = choose_and_fit(parse_points(synthetic()), ref_rank=16)
    assert res["model"] == "linear5+pstep+lora"
    want = {**TRUE, "prefill_token_s": TRUE["prefill_token_s"] + LORA, "decode_row_s": TRUE["decode_row_s"] + LORA}
    for k, v in want.items():
        assert res["constants"][k] == pytest.approx(v, rel=1e-3), k
    assert res["heldout"]["median_rel"] < 1e-6
    assert res["n_heldout"] > 0 and res["n_train"] + res["n_heldout"] == res["n_points"]


def test_noise_and_nonlinearity_show_up_in_the_heldout_error():
    clean = choose_and_fit(parse_points(synthetic(noise=0.03, seed=1)), ref_rank=16)
    assert 0.005 < clean["heldout"]["median_rel"] < 0.06
    bent = choose_and_fit(parse_points(synthetic(noise=0.03, seed=1, hinge=2e-4)), ref_rank=16)
    assert bent["heldout"]["p90_rel"] > clean["heldout"]["p90_rel"]


def test_nnls_matches_a_known_nonnegative_solution_and_clamps():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert nnls(a, np.array([1.0, 2.0, 3.0])) == pytest.approx([1.0, 2.0])
    x = nnls(a, np.array([-1.0, 2.0, 1.0]))  # unconstrained solution has x0 < 0
    assert x[0] == 0.0 and x[1] == pytest.approx(1.5)


def test_projection_folds_the_lora_term_into_per_token_costs():
    c = {**TRUE, "lora_token_s": 1e-5}
    p = project(c, "linear5+lora")
    assert p["decode_row_s"] == pytest.approx(7e-5) and p["prefill_token_s"] == pytest.approx(5e-5)
    assert "lora_token_s" not in p


def test_split_is_deterministic_and_disjoint():
    pts = parse_points(synthetic())
    a, b = split(pts, 5)
    a2, b2 = split(list(reversed(pts)), 5)
    assert a == a2 and b == b2 and not set(a) & set(b) and len(b) == len(pts) // 5 + (len(pts) % 5 > 2)


@pytest.mark.parametrize(
    "bad, msg",
    [
        ([], "non-empty"),
        ([{"prefill_tokens": 1}], "lacks"),
        (
            [dict(prefill_tokens=0, decode_seqs=0, distinct_adapters=0, rank=0, kv_tokens=0, step_s=0.1)],
            "needs prefill",
        ),
        ([dict(prefill_tokens=0, decode_seqs=1, distinct_adapters=2, rank=0, kv_tokens=5, step_s=0.1)], "rank > 0"),
        ([dict(prefill_tokens=0, decode_seqs=1, distinct_adapters=0, rank=0, kv_tokens=5, step_s=-1)], ">= 0"),
    ],
)
def test_bad_points_raise_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_points(bad)


def test_kv_budget_of_an_h200_serving_llama2_7b_4bit():
    assert kv_bytes_per_token(LLAMA2_7B) == 2 * 32 * 4096 * 2  # 512 KiB per token
    assert 3.8e9 < weight_bytes(LLAMA2_7B) < 4.0e9  # 6.5 B linear params at ~0.52 B + fp16 embed/head
    kv = kv_budget(141 * 10**9)
    assert kv.kv_bytes == int(0.9 * 141e9) - kv.weight_bytes - kv.adapter_pool_bytes - kv.activation_bytes
    assert 220_000 < kv.kv_tokens < 240_000 and kv.kv_blocks == kv.kv_tokens // 16
    with pytest.raises(ValueError, match="no room"):
        kv_budget(4 * 10**9)


def test_cli_writes_a_cost_model_the_simulator_schema_accepts(tmp_path):
    import subprocess

    src = tmp_path / "decode.json"
    src.write_text(json.dumps({"meta": {"device": "synthetic", "date": "2026-11-29"}, "cost_points": synthetic(0.02)}))
    out = tmp_path / "m.json"
    subprocess.run([sys.executable, str(BENCH_SIM / "calibrate_h200.py"), "--points", str(src), "--out", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    m = json.loads(out.read_text())
    for k in ("base_s", "prefill_token_s", "decode_row_s", "adapter_s", "kv_token_s"):
        assert isinstance(m[k], float) and m[k] >= 0
    assert m["placeholder"] is False and m["kv_blocks"] == kv_budget(141 * 10**9).kv_blocks
    assert m["fit_error"]["n_heldout"] > 0 and m["fit_error"]["median_rel"] < 0.05
    assert (tmp_path / "m.points.json").is_file()
