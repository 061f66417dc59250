"""quant_tcl (large-M Gluon tensor-core GEMM, kinds tcl / tclp / tcls): the x permutation and the candidates on
the CPU; the kernel itself against the dequantized fp32 product on CUDA (sm_90; skipped elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cases import ON_SM90
from gptq_weight import gptq_weight
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, candidate_configs
from inlaid_worker.kernels.quant_tcg import operand_rows

TCL = {"tcl", "tclp", "tcls"}


def _x_order(k: int, perm: torch.Tensor | None) -> torch.Tensor:
    from inlaid_worker.kernels.quant_tcl import x_order  # Gluon import: fine on the CPU, nothing is launched

    return x_order(k, perm, torch.device("cpu"))


def test_x_order_is_the_operand_order_of_each_tile() -> None:
    k = 384
    idx = _x_order(k, None)
    rows = operand_rows()
    assert torch.equal(idx[:128], rows) and torch.equal(idx[256:], rows + 256), "per 128-row tile, in place"
    x = torch.randn(5, k, dtype=torch.float64)
    w = torch.randn(k, 7, dtype=torch.float64)
    # the kernel multiplies column j of the permuted x with weight row idx[j] (operand column j of its tile)
    assert torch.allclose(x[:, idx] @ w[idx], x @ w)


def test_x_order_composes_act_order() -> None:
    k = 256
    perm = torch.randperm(k).int()
    idx = _x_order(k, perm)
    x = torch.randn(3, k, dtype=torch.float64)
    w = torch.randn(k, 4, dtype=torch.float64)
    base = _x_order(k, None)
    # packed row r reads x[:, perm[r]]; operand column j holds packed row base[j]
    assert torch.equal(idx, perm.long()[base])
    assert torch.allclose(x[:, idx] @ w[base], x[:, perm.long()] @ w)


def _smem_bytes(c: QMMConfig) -> int:
    x = c.num_stages * c.block_m * 128 * 2
    words = c.num_stages * 16 * c.block_n * 4
    operand = 2 * c.block_n * 128 * 2 if c.kind == "tcls" else 0
    return x + words + operand


def test_permute_x_matches_index_select_under_the_interpreter() -> None:
    """quant_tcl.permute_x (plain Triton, both paths) = x[:, idx], masked rows and a strided x included."""
    script = (
        "import torch\n"
        "from inlaid_worker.kernels.quant_tcl import permute_x, x_order\n"
        "x = torch.randn(40, 512, dtype=torch.float16)\n"
        "perm = torch.randperm(256).int()\n"
        "for xs, p in ((x, None), (x[:, :256], perm), (x.t().contiguous().t(), None)):\n"
        "    idx = x_order(xs.shape[1], p, xs.device)\n"
        "    assert torch.equal(permute_x(xs, idx), xs[:, idx]), 'gather'\n"
        "    if p is None:\n"
        "        assert torch.equal(permute_x(xs, None), xs[:, idx]), 'register permute'\n"
        "print('ok')\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


@pytest.mark.parametrize("m", [64, 100, 128, 256, 512, 2048])
def test_tcl_candidates_fit_the_h200(m: int) -> None:
    cands = [c for c in candidate_configs(m, 11008, 4096, 128, 4, torch.float16) if c.kind in TCL]
    assert cands, f"M={m}: the large-M kernel is offered"
    for c in cands:
        assert c.block_n % 64 == 0 and c.num_warps == c.block_n // 16, "one warpgroup per 64 weight columns"
        assert c.block_m % 8 == 0 and c.block_m <= 256, "wgmma N"
        assert _smem_bytes(c) <= 227 * 1024, f"{c}: shared memory"
        assert c.num_stages >= (3 if c.kind in ("tclp", "tcls") else 2)


def test_tcl_not_offered_where_it_cannot_run() -> None:
    def kinds(m: int, bits: int = 4, k: int = 4096, group: int = 128) -> set[str]:
        return {c.kind for c in candidate_configs(m, 4096, k, group, bits, torch.float16)}

    assert not kinds(32) & TCL and not kinds(8) & TCL, "small M stays with tc / tc2 / tcf2"
    assert not {c.kind for c in candidate_configs(256, 4096, 4096, 128, 3, torch.bfloat16)} & TCL, "3-bit: fp16 only"
    assert not kinds(256, k=4096 + 64, group=64) & TCL


@pytest.mark.skipif(not ON_SM90, reason="Gluon wgmma kernel: CUDA sm_90 only (the CPU twin is quant_tc, kind tcf)")
@pytest.mark.parametrize(
    ("kind", "bm", "stages", "m", "split", "sym", "act", "dtype"),
    [
        ("tcl", 64, 4, 64, 1, False, False, torch.float16),
        ("tcl", 128, 4, 100, 3, False, False, torch.float16),  # masked rows, a short last split
        ("tcl", 256, 3, 300, 2, True, True, torch.float16),
        ("tclp", 128, 4, 128, 2, False, False, torch.float16),
        ("tclp", 256, 3, 256, 1, False, True, torch.bfloat16),
        ("tcls", 64, 4, 72, 4, False, False, torch.float16),
        ("tcls", 128, 3, 256, 1, True, False, torch.float16),
        ("tcls", 128, 3, 200, 2, False, True, torch.bfloat16),
        ("tcl", 128, 2, 130, 1, False, True, torch.float16),  # block_n 64, 4 warps (set below)
    ],
)
def test_tcl_matches_reference(kind: str, bm: int, stages: int, m: int, split: int, sym: bool, act: bool,
                               dtype: torch.dtype) -> None:  # fmt: skip
    from inlaid_worker.kernels import quant_common
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    torch.manual_seed(0)
    k, n = 640, 328  # 5 K tiles; N not a multiple of the 128-column tile
    w, ref_w = gptq_weight(k, n, sym, act, "cuda")
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = x.float() @ ref_w
    y = torch.empty(m, n, device="cuda", dtype=dtype)
    bn = 64 if stages == 2 else 128
    launch_quant_matmul(x, w, QMMConfig(bm, bn, 128, split, bn // 16, stages, True, kind), y)
    err = float((y.float() - ref).norm() / ref.norm())
    assert err < (5e-3 if dtype == torch.bfloat16 else 1e-3), f"rel err {err:.2e}"
    for ws, cnt in quant_common._WORKSPACES.values():
        assert bool((ws == 0).all()) and bool((cnt == 0).all()), "split-K workspace left clean"
