"""CPU coverage (issue 4) of quant_tcl's Gluon kernel (_tcl_kernel, kinds tcl / tclp / tcls): it cannot run under
Triton's interpreter (on the CPU quant_matmul runs quant_tc's "tcf" twin for it: cases.py / test_tcl_xp.py), and no CI
test compiled it (test_quant_tcl.py checks the x order, the candidates and, on sm_90, the numerics; the offline
build lived only in bench/kernels/sass_tcl.py). Here the offline sm_90 build (Triton's ptxas, no GPU) of every plan
the tuner offers (quant_matmul_config.TCL_PLANS: block_m 64-256, block_n 64 / 128, 2-4 stages, PIPE 0 and 2, split-K
on and off) plus PIPE 1 (tclp), 3-bit weights, bf16 x and symmetric weights, each specialised by tcl_args as
launch_tcl launches it: it must compile, issue its K tile as 8 wgmma.mma_async a warpgroup (BLOCK_K 128 / 16), stream
through cp.async, keep within the H200's 227 KB of shared memory and the tuner's estimate (test_quant_tcl's
_smem_bytes), and not spill (the plans' promise: no spills in the offline build)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_cov_offline import build, ptxas_info  # noqa: E402

SMEM_MAX = 227 * 1024
# (block_m, block_n, stages, pipe, split, bits, dtype, sym): the tuner's plans, then tclp, 3-bit, bf16, sym
CONFIGS = [
    (64, 128, 4, 0, 2, 4, torch.float16, False),
    (64, 64, 4, 0, 1, 4, torch.float16, False),
    (64, 128, 4, 2, 4, 4, torch.float16, False),
    (128, 64, 2, 0, 2, 4, torch.float16, False),
    (128, 64, 3, 0, 1, 4, torch.float16, False),
    (128, 128, 4, 2, 2, 4, torch.float16, False),
    (256, 128, 3, 0, 1, 4, torch.float16, False),
    (128, 64, 3, 1, 2, 4, torch.float16, False),  # tclp (bench kind)
    (128, 64, 2, 0, 2, 3, torch.float16, False),  # 3-bit weights (quant_tcg._operand3)
    (64, 64, 3, 1, 1, 3, torch.float16, True),
    (128, 64, 2, 0, 2, 4, torch.bfloat16, False),
    (64, 128, 4, 2, 1, 4, torch.bfloat16, True),
]


def _weight(k: int, n: int, bits: int, sym: bool) -> object:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    torch.manual_seed(0)
    return prepare_gptq_weight(**make_gptq(k, n, bits, 128, sym, False, 1), bits=bits, group_size=128, sym=sym)


def _smem_estimate(bm: int, bn: int, stages: int, pipe: int) -> int:
    """test_quant_tcl._smem_bytes: the ring's x tiles and words, plus tcls's two operand buffers."""
    return stages * bm * 128 * 2 + stages * 16 * bn * 4 + (2 * bn * 128 * 2 if pipe == 2 else 0)


@pytest.mark.parametrize(("bm", "bn", "stages", "pipe", "split", "bits", "dtype", "sym"), CONFIGS)
def test_tcl_builds_for_sm90_offline(bm: int, bn: int, stages: int, pipe: int, split: int, bits: int,
                                     dtype: torch.dtype, sym: bool) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_tcl import _tcl_kernel, tcl_args

    k, n, m = 1024, 256, bm + 3  # 8 K tiles; rows past one block
    w = _weight(k, n, bits, sym)
    xp = torch.zeros(m, k, dtype=dtype)
    y = torch.empty(m, n, dtype=dtype)
    warps = bn // 16
    _, args, consts = tcl_args(xp, w, bm, bn, split, warps, stages, pipe, y)
    assert consts["USE_SPLIT"] == (split > 1) and consts["BITS"] == bits and consts["PIPE"] == pipe
    ck, _ = build(_tcl_kernel, args, consts, warps)
    ptx = ck.asm["ptx"]
    wgmmas = ptx.count("wgmma.mma_async")
    assert wgmmas >= 8 and wgmmas % 8 == 0, f"a K tile of 128 is 8 wgmma (K 16 each) a copy of the loop: {wgmmas}"
    assert "wgmma.wait_group" in ptx and "cp.async" in ptx
    assert ck.metadata.shared <= SMEM_MAX, ck.metadata.shared
    if bits == 4:
        est = _smem_estimate(bm, bn, stages, pipe)
        assert ck.metadata.shared <= est + 1024, (ck.metadata.shared, est)  # + barriers / epilogue scratch
    info = ptxas_info(ptx)
    assert info["spill_stores"] == 0 and info["spill_loads"] == 0, info
