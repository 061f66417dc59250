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

import importlib.util
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).resolve().parent
WORKERS = HERE.parents[1]
ROOT = WORKERS.parent
CUDA = torch.cuda.is_available()

# direct kernel cases: (kind, K, N, M, split, extra); run with USE_GDC 0, 1, 2
GEMV_CASES: dict[str, tuple] = {
    "hgemvr-loop-ragged-m1": ("hgemvr", 640, 40, 1, 2),
    "hgemvr-loop-m2": ("hgemvr", 768, 128, 2, 2),
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

    prev = pdl._MODE[0]
    try:
        pdl._MODE[0] = 4
        assert pdl.launch_kw() == {"USE_GDC": 1, "launch_pdl": True}
        assert pdl.launch_kw(tensor_core=True) == {"USE_GDC": 2, "launch_pdl": True}
        for m in (1, 2, 3):
            pdl._MODE[0] = m
            assert pdl.launch_kw() == pdl.launch_kw(tensor_core=True) == {"USE_GDC": m, "launch_pdl": True}
        pdl._MODE[0] = 0
        assert pdl.launch_kw(tensor_core=True) == {"USE_GDC": 0}
    finally:
        pdl._MODE[0] = prev


def test_bench_report_has_a_pdl_table_and_a_goal_line_per_mode() -> None:
    report = _engine_module("report")
    rows = [dict(kind="decode", shape="7b", quant="int4", backend="triton", rank=0, targets="-", batch=1, distinct=0,
                 fusion="none", pdl=m, step_ms=ms, roofline_ms=1.0, tokens_per_s=1e3 / ms, round_ms=[ms, ms])
            for m, ms in ((0, 2.0), (1, 1.6))]  # fmt: skip
    text = report.to_markdown(dict(date="d", command="c", device="x", torch="t", dtype="fp16", context=512,
                                   copy_GBps=4000.0, default_fusion="none"), rows)  # fmt: skip
    assert "| 7b | int4 | 1 | 0 | 2.000 (2.00x) | 1.600 (1.60x) | 1.250x |" in text, text
    assert "batch 1 (PDL mode 0): 2.00x" in text and "batch 1 (PDL mode 1): 1.60x" in text, text
    assert "none pdl1" in text


def _weight(case_id: str, k: int, n: int, device: str) -> tuple[dict, Any]:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    torch.manual_seed(zlib.crc32(case_id.encode()))
    raw = {name: t.to(device) for name, t in make_gptq(k, n, 4, 128, False, False, 1).items()}
    return raw, prepare_gptq_weight(**raw, bits=4, group_size=128, sym=False)


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
    from inlaid_worker.kernels import pdl

    outs: dict[int, list[torch.Tensor]] = {}
    ref = None
    for mode in (0, 1, 2, 3):
        prev = pdl._MODE[0]
        pdl._MODE[0] = mode  # what scope(mode) sets where PDL is supported
        try:
            if case_id in GEMV_CASES:
                from cases import _rel_err  # type: ignore[import-not-found]
                from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference

                kind, k, n, m, split = GEMV_CASES[case_id]
                raw, w = _weight(case_id, k, n, device)
                x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).half().to(device)
                y = torch.empty(m, n, dtype=torch.float16, device=device)
                launch_quant_matmul(x, w, _gemv_cfg(kind, k, m, split), y)
                outs[mode] = [y]
                if ref is None:
                    r = quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, 1)
                    ref = _rel_err(y, r)
            else:
                outs[mode] = _run_other(case_id, device)
        finally:
            pdl._MODE[0] = prev
    diff = {m: max(float((a.float() - b.float()).abs().max()) for a, b in zip(outs[m], outs[0], strict=True))
            for m in (1, 2, 3)}  # fmt: skip
    return dict(diff1=diff[1], diff2=diff[2], diff3=diff[3], err=ref, finite=all(bool(torch.isfinite(t).all()) for t in outs[0]))


@pytest.fixture(scope="module")
def pdl_case() -> Any:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{WORKERS}{os.pathsep}{HERE}")
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted PDL cases failed:\n{proc.stderr[-4000:]}")
    results: dict[str, dict] = json.loads(proc.stdout.strip().splitlines()[-1])
    return lambda case_id: results[case_id]


@pytest.mark.skipif(CUDA, reason="interpreter check of the code paths; on CUDA the graph tests below cover them")
@pytest.mark.parametrize("case_id", [*GEMV_CASES, *OTHER_CASES])
def test_pdl_code_paths_match_the_plain_kernels(case_id: str, pdl_case: Any) -> None:
    res = pdl_case(case_id)
    assert "error" not in res, res.get("error")
    assert res["finite"], res
    assert res["diff1"] == res["diff2"] == res["diff3"] == 0.0, res  # the same operations per element
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
        _, w = _weight(f"chain{i}", kk, n, "cuda")
        ws_list.append((w, _gemv_cfg(kind, kk, m, split)))
    x = torch.randn(m, k, device="cuda").half()
    norm_w = torch.rand(k, device="cuda").half() + 0.5
    outs = {}
    for mode in (0, 1, 2, 3):
        with pdl.scope(mode):
            _chain(ws_list, x, norm_w)  # compile outside the capture
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = _chain(ws_list, x, norm_w)
        results = []
        for _ in range(5):
            g.replay()
            torch.cuda.synchronize()
            results.append(out.clone())
        outs[mode] = results
    base = outs[0][0].float()
    for mode, results in outs.items():
        for r in results:
            rel = float((r.float() - base).norm() / base.norm())
            assert torch.isfinite(r).all() and rel < 5e-3, (mode, rel)


def _engine_module(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "bench" / "engine"))
    spec = importlib.util.spec_from_file_location(f"bench_engine_{name}", ROOT / "bench" / "engine" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not CUDA, reason="CUDA graphs with PDL need a GPU")
def test_decode_graph_steps_with_pdl_match_plain(tmp_path: Path) -> None:
    """A 2-layer Llama-7B-shaped int4 runner (the decode kernels the tuner picks for 7B): decode steps through the
    decode graphs with PDL off, on and late give the same logits and KV cache, over several steps and buckets."""
    from inlaid_worker.kernels import pdl
    from inlaid_worker.model.runner import ModelRunner

    if not pdl.supported():
        pytest.skip("PDL needs compute capability >= 9")
    rm = _engine_module("random_model")
    steps_mod = _engine_module("steps")
    shape = rm.Shape(4096, 11008, 2, 32, 32, 32000)
    cfg_dir = rm.write_config(shape, tmp_path / "cfg")
    torch.manual_seed(0)
    from inlaid_worker.model.config import load_model_config

    weights = rm.random_weights(load_model_config(cfg_dir), "int4", torch.device("cuda"), torch.float16)
    for layer in weights.layers:  # the benchmark's random scales overflow fp16 in the second layer's down_proj
        for mat in (layer.qkv, layer.o, layer.gate_up, layer.down):
            for part in mat.parts:
                part.scales.mul_(1 / 16)
    runner = ModelRunner(cfg_dir, "cuda", torch.float16, 256, 16, 4, "triton", weights, True)
    kv0 = torch.randn_like(runner.kv_cache) * 0.3
    for batch in (1, 2, 3):
        step = steps_mod.make_step(batch, 1, 100, [-1] * batch, shape.vocab, 256)
        got = {}
        for mode in (0, 1, 2, 3, 0, 1):
            runner.decode_pdl = mode
            runner.kv_cache.copy_(kv0)
            logits = runner.execute(step).clone()
            got.setdefault(mode, []).append((logits, runner.kv_cache.clone()))
        base, kv_base = got[0][0]
        assert torch.isfinite(base).all()
        for mode, pairs in got.items():
            for logits, kv in pairs:
                rel = float((logits - base).norm() / base.norm())
                assert rel < 1e-2, (batch, mode, rel)
                assert float((kv.float() - kv_base.float()).abs().max()) < 1e-2, (batch, mode)
    # buckets 1, 2 and 4 x 4 modes, kept across switches (all inside decode_graphs' PDL policy, buckets <= 16)
    assert runner.decode_pdl == 1 and runner.graph_captures == 12


def main() -> None:
    from cases import _patch_interpreter_for_numpy  # type: ignore[import-not-found]

    _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    out = {}
    for case_id in [*GEMV_CASES, *OTHER_CASES]:
        try:
            out[case_id] = run_case(case_id, "cpu")
        except Exception as exc:  # noqa: BLE001 - reported per case
            out[case_id] = {"error": repr(exc)[:2000]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
