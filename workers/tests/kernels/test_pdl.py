"""Programmatic Dependent Launch (kernels.pdl) for the decode kernels.

CPU: the switch is off and ignored without CUDA / under the interpreter; the env parsing; and, under
TRITON_INTERPRET=1 in a subprocess (this file as a script), every PDL-aware kernel run with USE_GDC 1 and 2 (the
interpreter skips the griddepcontrol instructions, so this checks the PDL code paths: weights loaded before the
wait, x after it; 3, the no-prefetch ablation) gives exactly what USE_GDC 0 gives. CUDA (skipped without it or below compute capability 9): a
chain of split-K GEMVs of the decode kinds sharing one workspace, with the norm / SwiGLU kernels between them,
captured in CUDA graphs with PDL modes 0-3 and replayed 5 times each; and decode steps of a 2-layer
Llama-7B-shaped int4 runner (the tuner's 7B picks) through the decode graphs in every PDL mode, switching back and
forth, at buckets 1, 2 and 4 (3 rows; the tensor-core GEMVs at bucket 4; LoRA and bucket 8: test_pdl_lora.py;
mode 4 only combines the kernels' modes 1 and 2: its launch_kw mapping is checked here).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pdl_helpers as ph
import pytest
import torch

CUDA = torch.cuda.is_available()

# direct kernel cases: (kind, K, N, M, split, extra); run with USE_GDC 0, 1, 2
GEMV_CASES: dict[str, tuple] = {
    "hgemvr-loop-ragged-m1": ("hgemvr", 640, 40, 1, 2),
    "hgemvr-loop-m2": ("hgemvr", 768, 64, 2, 2),
    "hgemvrb-burst3-m1": ("hgemvrb", 768, 64, 1, 2),  # 6 tiles, 2 splits: 3 tiles per program
    "hgemvrb-burst-ragged-m3": ("hgemvrb", 640, 40, 3, 2),  # programs of 3 + 2 tiles
    "hgemvrq-pin-m1": ("hgemvrq", 768, 64, 1, 2),
    "hgemvp-ahead-m1": ("hgemvp", 768, 64, 1, 3),
    "hgemv-pipe-m4": ("hgemv", 1024, 64, 4, 2),
    "hgemv-single-m2": ("hgemv", 512, 64, 2, 4),
}
OTHER_CASES = ("norm-res", "norm", "silu", "rope", "decode-parts4", "decode-parts1")


def test_switch_is_off_without_cuda_or_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.kernels import pdl

    pdl.supported.cache_clear()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not pdl.supported()
    with pdl.scope(1) as mode:
        assert mode == 0 and pdl.mode() == 0 and pdl.launch_kw() == {"USE_GDC": 0}
    pdl.supported.cache_clear()
    monkeypatch.delenv("TRITON_INTERPRET")
    if not CUDA:
        assert not pdl.supported()
        with pdl.scope(2) as mode:
            assert mode == 0 and pdl.launch_kw() == {"USE_GDC": 0}
    pdl.supported.cache_clear()
    assert pdl.mode() == 0


def test_env_mode_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.kernels import pdl

    for raw, want in (("", 1), ("0", 0), ("off", 0), ("1", 1), ("on", 1), ("true", 1), ("2", 2), ("end", 2), ("3", 3),
                      ("4", 4), ("mixed", 4)):  # fmt: skip
        monkeypatch.setenv("INLAID_PDL", raw)
        assert pdl.env_mode() == want, raw
    monkeypatch.delenv("INLAID_PDL")
    assert pdl.env_mode() == 1  # on by default (decode graphs at buckets <= 16: decode_graphs' policy)
    for bad in ("5", "fast"):
        monkeypatch.setenv("INLAID_PDL", bad)
        with pytest.raises(ValueError, match="INLAID_PDL"):
            pdl.env_mode()
    with pytest.raises(ValueError, match="PDL mode"):
        pdl.check_mode(5)


def test_decode_graphs_apply_pdl_where_the_whole_chain_is_pdl_aware() -> None:
    from types import SimpleNamespace

    from inlaid_worker.model.decode_graphs import PDL_MAX_BUCKET, DecodeGraphs

    assert PDL_MAX_BUCKET == 16  # measured (decode_graphs' docstring): >= 1.01x up to 16, neutral at 32
    g = SimpleNamespace(_pdl=1, pdl_max_bucket=PDL_MAX_BUCKET, pdl_lora=True)
    assert [DecodeGraphs.pdl_for(g, b, False) for b in (1, 2, 4, 16, 24, 32)] == [1, 1, 1, 1, 0, 0]  # type: ignore[arg-type]
    assert DecodeGraphs.pdl_for(g, 1, True) == 1 == DecodeGraphs.pdl_for(g, 16, True)  # type: ignore[arg-type]
    g.pdl_lora = False  # INLAID_PDL_LORA=0
    assert DecodeGraphs.pdl_for(g, 1, True) == 0  # type: ignore[arg-type]
    g.pdl_lora, g.pdl_max_bucket, g._pdl = True, 256, 2
    assert DecodeGraphs.pdl_for(g, 1, True) == 2 == DecodeGraphs.pdl_for(g, 256, False)  # type: ignore[arg-type]
    g._pdl = 0
    assert DecodeGraphs.pdl_for(g, 1, False) == 0  # type: ignore[arg-type]


def test_decode_graphs_policy_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    from inlaid_worker.model.decode_graphs import PDL_MAX_BUCKET, pdl_policy_env

    monkeypatch.delenv("INLAID_PDL_MAX_BUCKET", raising=False)
    monkeypatch.delenv("INLAID_PDL_LORA", raising=False)
    assert pdl_policy_env() == (PDL_MAX_BUCKET, True)  # LoRA graphs get PDL by default (test_pdl_lora.py on GPU)
    monkeypatch.setenv("INLAID_PDL_MAX_BUCKET", "2")
    monkeypatch.setenv("INLAID_PDL_LORA", "0")
    assert pdl_policy_env() == (2, False)
    monkeypatch.setenv("INLAID_PDL_LORA", "1")
    assert pdl_policy_env() == (2, True)


def test_launch_kw_mode4_late_only_for_the_tensor_core_gemvs() -> None:
    from inlaid_worker.kernels import pdl

    prev = pdl._MODE.value
    try:
        pdl._MODE.value = 4
        assert pdl.launch_kw() == {"USE_GDC": 1, "launch_pdl": True}
        assert pdl.launch_kw(tensor_core=True) == {"USE_GDC": 2, "launch_pdl": True}
        for m in (1, 2, 3):
            pdl._MODE.value = m
            assert pdl.launch_kw() == pdl.launch_kw(tensor_core=True) == {"USE_GDC": m, "launch_pdl": True}
        pdl._MODE.value = 0
        assert pdl.launch_kw(tensor_core=True) == {"USE_GDC": 0}
    finally:
        pdl._MODE.value = prev


def test_bench_report_has_a_pdl_table_and_a_goal_line_per_mode() -> None:
    report = ph.engine_module("report")
    rows = [dict(kind="decode", shape="7b", quant="int4", backend="triton", rank=0, targets="-", batch=1, distinct=0,
                 fusion="none", pdl=m, step_ms=ms, roofline_ms=1.0, tokens_per_s=1e3 / ms, round_ms=[ms, ms])
            for m, ms in ((0, 2.0), (1, 1.6))]  # fmt: skip
    text = report.to_markdown(dict(date="d", command="c", device="x", torch="t", dtype="fp16", context=512,
                                   copy_GBps=4000.0, default_fusion="none"), rows)  # fmt: skip
    assert "| 7b | int4 | 1 | 0 | 2.000 (2.00x) | 1.600 (1.60x) | 1.250x |" in text, text
    assert "batch 1 (PDL mode 0): 2.00x" in text and "batch 1 (PDL mode 1): 1.60x" in text, text
    assert "none pdl1" in text


def _gemv_cfg(kind: str, k: int, m: int, split: int):  # type: ignore[no-untyped-def]
    from inlaid_worker.kernels.quant_matmul_config import QMMConfig

    bm = 1 if m == 1 else (2 if m == 2 else 4)
    stages = {"hgemvp": 1, "hgemv": 3 if m == 4 else 1}.get(kind, 1)
    return QMMConfig(bm, 64, 128, split, 2, stages, False, kind)


def _run_other(case_id: str, device: str) -> list[torch.Tensor]:
    """One non-GEMV decode kernel on fixed inputs; its outputs (and in-place results)."""
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.paged_decode import paged_decode
    from inlaid_worker.kernels.rope_cache import rope_and_cache
    from inlaid_worker.kernels.silu_mul import silu_mul

    g = torch.Generator().manual_seed(zlib.crc32(case_id.encode()))
    dt = torch.float16 if device == "cuda" else torch.float32

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=dt)

    if case_id.startswith("norm"):
        x, w, res = rnd(3, 256), rnd(256), rnd(3, 256)
        out = add_rms_norm(x, w, 1e-5, residual=res if case_id == "norm-res" else None)
        return [out, res]
    if case_id == "silu":
        return [silu_mul(rnd(2, 2 * 1100))]
    heads, kvh, d, bs = 4, 2, 32, 4
    kc, vc = rnd(16, bs, kvh, d), rnd(16, bs, kvh, d)
    if case_id == "rope":
        qkv, cos, sin = rnd(3, (heads + 2 * kvh) * d), rnd(3, d), rnd(3, d)
        slots = torch.tensor([5, -1, 17], device=device)
        return [rope_and_cache(qkv, cos, sin, slots, kc, vc, heads), kc, vc]
    q = rnd(3, heads, d)
    tables = torch.arange(15, device=device, dtype=torch.int32).reshape(3, 5)
    lens = torch.tensor([17, 3, 0], device=device, dtype=torch.int32)
    parts = 4 if case_id == "decode-parts4" else 1
    return [paged_decode(q, kc, vc, tables, lens, d**-0.5, parts, tune=False)]


def run_case(case_id: str, device: str) -> dict[str, Any]:
    """Outputs with USE_GDC 1 and 2 (forced through kernels.pdl's mode) vs USE_GDC 0: max |diff|, and the GEMVs'
    error vs the reference. On the CPU the interpreter skips the griddepcontrol instructions; on CUDA the launches
    are plain stream launches with the PDL attribute (in-order: results must not change)."""
    ref: list[float] = []  # the GEMVs' error vs the reference, in mode 0 (the first run)

    def run() -> list[torch.Tensor]:
        if case_id not in GEMV_CASES:
            return _run_other(case_id, device)
        from cases import _rel_err  # type: ignore[import-not-found]
        from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference

        kind, k, n, m, split = GEMV_CASES[case_id]
        raw, w = ph.gptq_weight(case_id, k, n, 4, device)
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).half().to(device)
        y = torch.empty(m, n, dtype=torch.float16, device=device)
        launch_quant_matmul(x, w, _gemv_cfg(kind, k, m, split), y)
        if not ref:
            r = quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, 1)
            ref.append(_rel_err(y, r))
        return [y]

    _, res = ph.run_modes(run)
    return dict(res, err=ref[0] if ref else None)


@pytest.fixture(scope="module")
def pdl_case() -> Any:
    return ph.interpreted_cases(__file__)


@pytest.mark.skipif(CUDA, reason="interpreter check of the code paths; on CUDA the graph tests below cover them")
@pytest.mark.parametrize("case_id", [*GEMV_CASES, *OTHER_CASES])
def test_pdl_code_paths_match_the_plain_kernels(case_id: str, pdl_case: Any) -> None:
    res = pdl_case(case_id)
    ph.assert_same_as_mode0(res)
    if case_id in GEMV_CASES:
        assert res["err"] < 2e-3, res


# ---------------------------------------------------------------------------------------------- CUDA graphs


def _chain(ws_list: list, x: torch.Tensor, norm_w: torch.Tensor) -> torch.Tensor:
    """GEMV -> add_rms_norm -> GEMV -> silu_mul -> GEMV ... : every kernel reads the previous one's output, and the
    split-K GEMVs share quant_common's workspace and counters."""
    from inlaid_worker.kernels.fused_norm import add_rms_norm
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.silu_mul import silu_mul

    h = x.clone()
    cur = x
    for w, cfg in ws_list:
        y = torch.empty(cur.shape[0], w.out_features, dtype=torch.float16, device=x.device)
        launch_quant_matmul(cur, w, cfg, y)
        if w.out_features == 4 * x.shape[1]:  # "gate/up": SwiGLU to 2K for the next ("down") GEMV
            cur = silu_mul(y)
        else:
            cur = add_rms_norm(y, norm_w, 1e-5, residual=h)
    return cur


@pytest.mark.skipif(not CUDA, reason="CUDA graphs with PDL need a GPU")
@pytest.mark.parametrize("m", [1, 2])
def test_graph_gemv_chain_with_pdl_matches_plain(m: int) -> None:
    from inlaid_worker.kernels import pdl

    if not pdl.supported():
        pytest.skip("PDL needs compute capability >= 9")
    k = 1024
    kinds = [("hgemvr", 4 * k, k, 4), ("hgemvrb", k, 2 * k, 8), ("hgemvp", k, k, 8), ("hgemvr", 4 * k, k, 2),
             ("hgemvrb", k, 2 * k, 16), ("hgemv", k, k, 4)]  # (kind, N, K, split): N = 4K feeds silu_mul
    ws_list = []
    for i, (kind, n, kk, split) in enumerate(kinds):
        _, w = ph.gptq_weight(f"chain{i}", kk, n, 4, "cuda")
        ws_list.append((w, _gemv_cfg(kind, kk, m, split)))
    x = torch.randn(m, k, device="cuda").half()
    norm_w = torch.rand(k, device="cuda").half() + 0.5
    ph.graph_replays_match_mode0(lambda: _chain(ws_list, x, norm_w))


@pytest.mark.skipif(not CUDA, reason="CUDA graphs with PDL need a GPU")
def test_decode_graph_steps_with_pdl_match_plain(tmp_path: Path) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the decode kernels the tuner picks for 7B): decode steps through the
    decode graphs with PDL off, on and late give the same logits and KV cache, over several steps and buckets."""
    from inlaid_worker.kernels import pdl

    if not pdl.supported():
        pytest.skip("PDL needs compute capability >= 9")
    steps_mod = ph.engine_module("steps")
    runner, _, shape = ph.random_7b_runner(tmp_path, 4)
    kv0 = torch.randn_like(runner.kv_cache) * 0.3
    for batch in (1, 2, 3):
        step = steps_mod.make_step(batch, 1, 100, [-1] * batch, shape.vocab, 256)
        ph.decode_steps_match_mode0(runner, step, kv0, (batch,))
    # buckets 1, 2 and 4 x 4 modes, kept across switches (all inside decode_graphs' PDL policy, buckets <= 16)
    assert runner.decode_pdl == 1 and runner.graph_captures == 12


def main() -> None:
    ph.print_case_results([*GEMV_CASES, *OTHER_CASES], run_case)


if __name__ == "__main__":
    main()
