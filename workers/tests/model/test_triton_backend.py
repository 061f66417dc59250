"""The runner's triton backend (multi-LoRA kernels over stacked pools, quant_matmul on a GPTQ checkpoint)
gives the torch backend's logits, on a dense and on a 4-bit checkpoint of the tiny model. Both run on the CPU in
one subprocess under Triton's interpreter (TRITON_INTERPRET must be set before triton is imported), on a GPU host
too: the case builds CPU tensors, so the subprocess is given no GPU (CUDA_VISIBLE_DEVICES="") and the interpreter
always (before, a GPU host left the interpreter off and the triton kernels failed on the CPU tensors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories import make_tiny_llama
from inlaid_worker.model.backend import resolve_backend
from inlaid_worker.quant import QuantSpec, quantize_checkpoint

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("backend")
    model = make_tiny_llama(root / "model")
    gptq = root / "gptq"
    quantize_checkpoint(model, gptq, "rtn", QuantSpec(bits=4, group_size=32), dtype=torch.float16)
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), str(TESTS / "kernels"), str(HERE)])
    env = dict(os.environ, PYTHONPATH=path, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, str(HERE / "triton_backend_case.py"), "dense", str(model), "gptq", str(gptq)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"backend comparison failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dense_model_with_three_adapters_matches_torch_backend(results: dict[str, dict]) -> None:
    r = results["dense"]
    assert r["adapter_effect"] > 1e-2, "the adapters must move the logits for the comparison to mean anything"
    assert max(r["step_errors"]) < 1e-4, r


def test_gptq_checkpoint_runs_packed_through_quant_matmul_and_matches(results: dict[str, dict]) -> None:
    r = results["gptq"]
    assert r["triton_packed"] and r["torch_dense"]
    assert r["adapter_effect"] > 1e-2
    assert max(r["step_errors"]) < 5e-3, r  # activations go through the kernel in fp16


def test_backend_defaults_and_validation() -> None:
    assert resolve_backend(None, torch.device("cpu")) == "torch"
    assert resolve_backend(None, torch.device("cuda")) == "triton"
    assert resolve_backend("triton", torch.device("cpu")) == "triton"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", torch.device("cpu"))
