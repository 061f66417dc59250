"""Kernel checks run on CUDA in-process when present, else once on the CPU under Triton's interpreter.

The interpreter needs TRITON_INTERPRET=1 before triton is first imported, which would change Triton
for every other test in the session; so on the CPU all cases run in one subprocess (cases.py) and each
test asserts on its own case's result.
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


@pytest.fixture(scope="session")
def kernel_case() -> Callable[[str], dict]:
    """case id -> result dict of cases.run_case (errors, shapes)."""
    if torch.cuda.is_available():
        sys.path.insert(0, str(HERE))
        import cases  # type: ignore[import-not-found]

        return lambda case_id: cases.run_case(case_id, "cuda")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{WORKERS}{os.pathsep}{HERE}")
    proc = subprocess.run(
        [sys.executable, str(HERE / "cases.py")], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted kernel cases failed:\n{proc.stderr[-4000:]}")
    results: dict[str, dict] = json.loads(proc.stdout.strip().splitlines()[-1])
    return lambda case_id: results[case_id]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
