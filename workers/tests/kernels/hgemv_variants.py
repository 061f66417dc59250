"""Shared shell of the half2 GEMV variant tests (test_quant_hgemv_ahead, test_quant_hgemv_burst).

Each variant file has its own case table and run_case(case_id, device); this module builds a case's weight and x,
compares a variant's output with the reference and the v4 loop, asserts on the result, and runs the cases on CUDA
in-process or once on the CPU in a subprocess under TRITON_INTERPRET=1 (the variant file as a script).
"""

from __future__ import annotations

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
RunCase = Callable[[str, str], dict[str, Any]]


def make_case(case_id: str, k: int, n: int, m: int, g: int, sym: bool, act: bool, fmt: str, device: str) -> tuple:
    """(raw GPTQ tensors, prepared 4-bit weight, fp16 x[m, k]), seeded by the case id."""
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import CHECKPOINT_FORMATS, prepare_gptq_weight

    torch.manual_seed(zlib.crc32(case_id.encode()))
    raw = {name: t.to(device) for name, t in make_gptq(k, n, 4, g, sym, act, CHECKPOINT_FORMATS[fmt]).items()}
    w = prepare_gptq_weight(**raw, bits=4, group_size=g, sym=sym, checkpoint_format=fmt)
    x = torch.randn(m, k, device=device).half()
    return raw, w, x


def compare(y: torch.Tensor, y2: torch.Tensor, v4: torch.Tensor, x: torch.Tensor, raw: dict, w: Any) -> dict[str, Any]:
    """Relative error vs the reference, the v4 loop's output difference, and a repeat's (workspace clean)."""
    from cases import _rel_err  # type: ignore[import-not-found]
    from inlaid_worker.kernels.quant_matmul import quant_matmul_reference

    ref = quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, w.zero_offset)
    return dict(err=_rel_err(y, ref), repeat_diff=float((y.float() - y2.float()).abs().max()),
                v4_diff=float((y.float() - v4.float()).abs().max()), shape=list(y.shape))  # fmt: skip


def check_result(res: dict[str, Any], m: int, n: int) -> None:
    """The assertions every variant case must pass."""
    assert "error" not in res, res.get("error")
    assert res["shape"] == [m, n]
    assert res["err"] < 2e-3, res
    assert res["repeat_diff"] < 1e-3, "split-K workspace was not left clean"
    # the same products in the same order per element: only the split-K atomics' order may differ (CUDA)
    assert res["v4_diff"] < (1e-3 if torch.cuda.is_available() else 1e-6), res


def seeded_cases(cases: dict[str, Any], run: Callable[[Any, str], dict[str, Any]]) -> RunCase:
    """run_case(case_id, device) for a case table: run(cases[case_id], device) seeded by the case id; an exception is
    the case's result (dict(error=repr)), reported per case by the test that owns it."""

    def run_case(case_id: str, device: str) -> dict[str, Any]:
        torch.manual_seed(zlib.crc32(case_id.encode()))
        try:
            return run(cases[case_id], device)
        except Exception as exc:  # reported per case by the test that owns it
            return dict(error=repr(exc))

    return run_case


def check_sums_region(res: dict[str, Any], region: str) -> None:
    """A "+g" / "+q" kernel case (consumer_finish's fp32 sums regions) ran; its `region` sums had a region of their
    own, were written, and the region, the split-K workspace and the counters were zero afterwards."""
    assert "error" not in res, res.get("error")
    assert not res["shared"], f"the {region} sums share the o / down / gate-up workspace"
    assert res["was_set"], res
    assert res["dirty"] == 0, f"{region} sums, split-K workspace or counters not left at zero"


def with_gpu_cases(cases: Iterable[str], gpu_cases: Iterable[str]) -> list[Any]:
    """Parameters for the case ids: `cases` everywhere, `gpu_cases` (7B shapes) skipped without CUDA."""
    import pytest

    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="7B shapes: CUDA only")
    return [*cases, *(pytest.param(c, marks=skip) for c in gpu_cases)]


def case_runner(script: str, run_case: RunCase, label: str, timeout: int) -> Callable[[str], dict[str, Any]]:
    """case id -> result: in-process on CUDA, else all cases once in `script` under Triton's interpreter."""
    if torch.cuda.is_available():
        sys.path.insert(0, str(HERE))
        return lambda case_id: run_case(case_id, "cuda")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{HERE.parents[1]}{os.pathsep}{HERE}")
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted {label} cases failed:\n{proc.stderr[-4000:]}")
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return lambda case_id: results[case_id]


def main(case_ids: list[str], run_case: RunCase) -> None:
    """The variant file as a script: run the named cases (or all) on the CPU and print their results as JSON."""
    from cases import _patch_interpreter_for_numpy  # type: ignore[import-not-found]

    if os.environ.get("TRITON_INTERPRET") == "1":
        _patch_interpreter_for_numpy()
    torch.set_num_threads(1)
    out = {}
    for cid in sys.argv[1:] or case_ids:
        try:
            out[cid] = run_case(cid, "cpu")
        except Exception as exc:  # reported per case by the test that owns it
            out[cid] = dict(error=repr(exc))
    print(json.dumps(out))
