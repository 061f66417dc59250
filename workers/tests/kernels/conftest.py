"""Kernel checks run on CUDA in-process when present, else once on the CPU under Triton's interpreter.

The interpreter needs TRITON_INTERPRET=1 before triton is first imported, which would change Triton
for every other test in the session; so on the CPU each group of cases (quant_matmul's, LoRA's) runs in one
subprocess (cases.py) and each test asserts on its own case's result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
WORKERS = HERE.parents[1]
sys.path.insert(0, str(HERE))
from cases import LORA_CASES, QMM_CASES  # noqa: E402


@pytest.fixture(scope="session")
def kernel_case() -> Callable[[str], dict]:
    """case id -> result dict of cases.run_case (errors, shapes)."""
    if torch.cuda.is_available():
        import cases  # type: ignore[import-not-found]

        return lambda case_id: cases.run_case(case_id, "cuda")
    results: dict[str, dict] = {}

    def interpreted(case_id: str) -> dict:
        """On the first case of a group (quant_matmul's or LoRA's), that group's cases in one subprocess: a test
        file run alone (or on its own pytest-xdist worker) runs only its own group."""
        if case_id not in results:
            ids = list(LORA_CASES if case_id in LORA_CASES else QMM_CASES)
            env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{WORKERS}{os.pathsep}{HERE}")
            proc = subprocess.run([sys.executable, str(HERE / "cases.py"), *ids], env=env, capture_output=True,
                                  text=True, timeout=600)  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(f"interpreted kernel cases failed:\n{proc.stderr[-4000:]}")
            results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        return results[case_id]

    return interpreted


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
