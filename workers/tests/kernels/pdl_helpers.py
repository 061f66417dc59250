"""Shared pieces of the PDL tests (test_pdl.py, test_pdl_lora.py).

CPU: each test file runs its cases once under TRITON_INTERPRET=1 in a subprocess (the file as a script, its main:
`print_case_results`), every case with kernels.pdl's mode forced to 0-3 (`run_modes`), and asserts per case on
the results (`interpreted_cases`, `assert_same_as_mode0`). CUDA: graph chains captured and replayed per PDL mode
(`graph_replays_match_mode0`), and decode steps of a 2-layer Llama-7B-shaped int4 runner
(`random_7b_runner`) in every mode (`decode_steps_match_mode0`); the decode-fusion tests (test_gemv_norm,
test_quant_swiglu) run theirs per fusion (`decode_fusion_runs`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
WORKERS = HERE.parents[1]
ROOT = WORKERS.parent
MODES = (0, 1, 2, 3)  # what the kernels' USE_GDC knows (scope mode 4 only maps onto 1 and 2)


def gptq_weight(case_id: str, k: int, n: int, bits: int, device: str) -> tuple[dict, Any]:
    """A random GPTQ weight (seeded by case_id): its raw tensors and the prepared weight."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    torch.manual_seed(zlib.crc32(case_id.encode()))
    raw = {name: t.to(device) for name, t in make_gptq(k, n, bits, 128, False, False, 1).items()}
    return raw, prepare_gptq_weight(**raw, bits=bits, group_size=128, sym=False)


def run_modes(run: Callable[[], list[torch.Tensor]]) -> tuple[dict[int, list[torch.Tensor]], dict[str, Any]]:
    """run()'s outputs with kernels.pdl's mode forced to 0-3 (USE_GDC 0-3), and their max |diff| against mode 0's
    (diff1, diff2, diff3) and whether mode 0's are finite."""
    from inlaid_worker.kernels import pdl

    outs: dict[int, list[torch.Tensor]] = {}
    for mode in MODES:
        prev = pdl._MODE.value
        pdl._MODE.value = mode  # what scope(mode) sets where PDL is supported
        try:
            outs[mode] = run()
        finally:
            pdl._MODE.value = prev
    diff = {m: max(float((a.float() - b.float()).abs().max()) for a, b in zip(outs[m], outs[0], strict=True))
            for m in (1, 2, 3)}  # fmt: skip
    return outs, dict(diff1=diff[1], diff2=diff[2], diff3=diff[3],
                      finite=all(bool(torch.isfinite(t).all()) for t in outs[0]))  # fmt: skip


def print_case_results(case_ids: Iterable[str], run_case: Callable[[str, str], dict]) -> None:
    """The test files' script mode (under TRITON_INTERPRET=1): every case on the CPU, one JSON line."""
    from cases import _patch_interpreter_for_numpy  # type: ignore[import-not-found]

    _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    out = {}
    for case_id in case_ids:
        try:
            out[case_id] = run_case(case_id, "cpu")
        except Exception as exc:  # noqa: BLE001 - reported per case
            out[case_id] = {"error": repr(exc)[:2000]}
    print(json.dumps(out))


def interpreted_cases(script: str) -> Callable[[str], dict]:
    """Runs the test file `script` as a script under TRITON_INTERPRET=1: case id -> its result."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{WORKERS}{os.pathsep}{HERE}")
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted PDL cases failed:\n{proc.stderr[-4000:]}")
    results: dict[str, dict] = json.loads(proc.stdout.strip().splitlines()[-1])
    return lambda case_id: results[case_id]


def interpreted_dispatch_matches_reference(kinds: tuple[str, ...], config: tuple[int, ...], act: bool) -> None:
    """launch_quant_matmul with QMMConfig(*config, True, kind) for each of `kinds` on a random 3 x 256 fp16 x and a
    256 x 64 4-bit GPTQ weight (act-order `act`), in a subprocess under TRITON_INTERPRET=1: each within 2e-3
    (relative norm) of quant_matmul_reference (the quant_tcs / quant_tcv dispatch tests)."""
    script = (
        "import torch\n"
        "from cases import _patch_interpreter_for_numpy, make_gptq\n"
        "_patch_interpreter_for_numpy()\n"
        "from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight\n"
        "from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul_reference\n"
        "from inlaid_worker.kernels.quant_matmul_config import QMMConfig\n"
        "torch.manual_seed(0)\n"
        f"raw = make_gptq(256, 64, 4, 128, sym=False, act={act!r}, zero_offset=1)\n"
        "w = prepare_gptq_weight(**raw, bits=4, group_size=128, sym=False)\n"
        "x = torch.randn(3, 256).half()\n"
        "ref = quant_matmul_reference(x, raw['qweight'], raw['qzeros'], raw['scales'], raw['g_idx'], 4, 1).float()\n"
        f"for kind in {kinds!r}:\n"
        "    y = torch.empty(3, 64, dtype=torch.float16)\n"
        f"    launch_quant_matmul(x, w, QMMConfig(*{config!r}, True, kind), y)\n"
        "    err = float((y.float() - ref).norm() / ref.norm())\n"
        "    assert err < 2e-3, (kind, err)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{WORKERS}{os.pathsep}{HERE}")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def assert_same_as_mode0(res: dict) -> None:
    """An interpreted case ran, its outputs are finite and USE_GDC 1-3 gave exactly mode 0's."""
    assert "error" not in res, res.get("error")
    assert res["finite"], res
    assert res["diff1"] == res["diff2"] == res["diff3"] == 0.0, res  # the same operations per element


def graph_replays_match_mode0(chain: Callable[[], torch.Tensor]) -> None:
    """chain() captured in a CUDA graph in each PDL mode 0-3 (compiled outside the capture) and replayed 5 times:
    every replay finite and within 5e-3 (relative norm) of mode 0's first."""
    from inlaid_worker.kernels import pdl

    outs = {}
    for mode in MODES:
        with pdl.scope(mode):
            chain()  # compile outside the capture
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                out = chain()
        results = []
        for _ in range(5):
            g.replay()
            torch.cuda.synchronize()
            results.append(out.clone())
        outs[mode] = results
    base = outs[0][0].float()
    assert torch.isfinite(base).all()
    for mode, results in outs.items():
        for r in results:
            rel = float((r.float() - base).norm() / base.norm())
            assert torch.isfinite(r).all() and rel < 5e-3, (mode, rel)


def engine_module(name: str) -> Any:
    """bench/engine/NAME.py, imported as bench_engine_NAME (bench/engine on sys.path for its own imports)."""
    sys.path.insert(0, str(ROOT / "bench" / "engine"))
    spec = importlib.util.spec_from_file_location(f"bench_engine_{name}", ROOT / "bench" / "engine" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def random_7b_runner(tmp_path: Path, max_bucket: int) -> tuple[Any, Any, Any]:
    """A 2-layer Llama-7B-shaped int4 runner on CUDA (bench/engine/random_model's weights, the decode kernels the
    tuner picks for 7B; decode graphs up to `max_bucket`), bench/engine/random_model itself and the shape."""
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.runner import ModelRunner

    rm = engine_module("random_model")
    shape = rm.Shape(4096, 11008, 2, 32, 32, 32000)
    cfg_dir = rm.write_config(shape, tmp_path / "cfg")
    torch.manual_seed(0)
    weights = rm.random_weights(load_model_config(cfg_dir), "int4", torch.device("cuda"), torch.float16)
    for layer in weights.layers:  # the benchmark's random scales overflow fp16 in the second layer's down_proj
        for mat in (layer.qkv, layer.o, layer.gate_up, layer.down):
            for part in mat.parts:
                part.scales.mul_(1 / 16)
    return ModelRunner(cfg_dir, "cuda", torch.float16, 256, 16, max_bucket, "triton", weights, True), rm, shape


def decode_steps_match_mode0(runner: Any, step: Any, kv0: torch.Tensor, label: tuple) -> None:
    """`step` run from KV cache kv0 in PDL modes 0, 1, 2, 3, 0, 1 (switching back and forth): every run's logits
    (relative norm) and KV cache (max |diff|) within 1e-2 of mode 0's first; `label` leads the failure messages."""
    got: dict[int, list] = {}
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
            assert rel < 1e-2, (*label, mode, rel)
            assert float((kv.float() - kv_base.float()).abs().max()) < 1e-2, (*label, mode)


def decode_fusion_runs(runner: Any, step: Any, kv0: torch.Tensor, fusions: Iterable[str]) -> dict[str, list]:
    """`step` run from KV cache kv0 with runner.decode_fusion set to each of `fusions` in turn: fusion -> its runs'
    (logits, KV cache), in order."""
    got: dict[str, list] = {}
    for fusion in fusions:
        runner.decode_fusion = fusion
        runner.kv_cache.copy_(kv0)
        logits = runner.execute(step).clone()
        got.setdefault(fusion, []).append((logits, runner.kv_cache.clone()))
    return got


def fusions_match_unfused(runner: Any, vocab: int, fusions: Iterable[str], batches: Iterable[int] = (1, 2, 3)
                          ) -> dict[int, dict[str, list]]:  # fmt: skip
    """For each batch, one decode step (100 cached tokens a row) run from one random KV cache with runner.decode_fusion
    set to each of `fusions` in turn (decode_fusion_runs; `fusions` must include "none"): every run's logits and KV
    cache match the first "none" run's (1e-2 relative / absolute) and it is finite. Returns batch -> its runs."""
    steps_mod = engine_module("steps")
    kv0 = torch.randn_like(runner.kv_cache) * 0.3
    out: dict[int, dict[str, list]] = {}
    for batch in batches:
        step = steps_mod.make_step(batch, 1, 100, [-1] * batch, vocab, 256)
        got = decode_fusion_runs(runner, step, kv0, fusions)
        base, kv_base = got["none"][0]
        assert torch.isfinite(base).all()
        for fusion, runs in got.items():
            for logits, kv in runs:
                assert float((logits - base).norm() / base.norm()) < 1e-2, (batch, fusion)
                assert float((kv.float() - kv_base.float()).abs().max()) < 1e-2, (batch, fusion)
        out[batch] = got
    return out


def tiny_decode_inputs(c: Any, device: str) -> dict[str, torch.Tensor]:
    """A decode step of two sequences (6 and 11 tokens) for forward_fast on the model config c, fp16, block size 4:
    kv [layers, 2, 8 blocks, 4, kv_heads, head_dim] random, block tables, lengths, the new tokens' slots, cos / sin
    of their positions, token ids."""
    from inlaid_worker.model.rope import cos_sin, inv_frequencies

    bs = 4
    kv = torch.randn(c.num_layers, 2, 8, bs, c.num_kv_heads, c.head_dim, device=device).half() * 0.5
    tables = torch.arange(8, dtype=torch.int32, device=device).reshape(2, 4)
    lens = torch.tensor([6, 11], dtype=torch.int32, device=device)
    last = (lens - 1).long()
    slots = tables.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs
    cos, sin = cos_sin(inv_frequencies(c.rope, c.head_dim, device), last, torch.float16)
    return dict(kv=kv, tables=tables, lens=lens, slots=slots, cos=cos[:, 0], sin=sin[:, 0],
                tokens=torch.tensor([5, 77], device=device))  # fmt: skip


def tiny_int4_decode(device: str, layers: int) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """A tiny random int4 Llama (hidden 128, intermediate 256, `layers` layers, 4 heads, 2 KV heads; post-attention
    norm weights in [0.5, 1.5)) on `device`, seed 1: its config, weights and tiny_decode_inputs."""
    import tempfile

    from inlaid_worker.model.config import load_model_config

    rm = engine_module("random_model")
    shape = rm.Shape(128, 256, layers, 4, 2, 512)
    c = load_model_config(rm.write_config(shape, Path(tempfile.mkdtemp()) / "tiny"))
    torch.manual_seed(1)
    w = rm.random_weights(c, "int4", torch.device(device), torch.float16)
    for layer in w.layers:
        layer.post_norm.copy_(torch.rand(c.hidden_size) + 0.5)
    return c, w, tiny_decode_inputs(c, device)
