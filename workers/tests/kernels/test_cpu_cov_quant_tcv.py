"""CPU coverage (issue 4) of quant_tcv's Gluon kernel (_tcv_kernel, kinds tcv / tcv2): it cannot run under Triton's
interpreter (on the CPU quant_matmul runs quant_tc's "tc" for it: test_quant_tcv.py, which also checks the column
order, the one-shift dequantization and the pure-torch model tcv_reference), and no CI test compiled it. Here the
offline sm_90 build (Triton's ptxas, no GPU) as tcv_args specialises it for launch_tcv: every plan the tuner offers
(quant_matmul_config.TCV_PLANS x TCV_SPLITS: block_n 128 / 64, register look-ahead 2 or a 4-slot cp.async ring),
the 2-half operand (tcv2), depth 1 and 3, the 8-slot ring, act-order (x through perm), bf16 (three-shift operand)
and symmetric weights: it must compile, issue 8 wgmma.mma_async per K tile copy (x NSUB), stay within the staging
bound the tuner checks (staged_bytes <= X_SMEM_MAX) and not spill. Under PDL (USE_GDC 1-3, kernels.pdl) the sm_90
PTX must obey kernels.pdl's rules (pdl_ptx_order.analyze, as test_pdl_ptx_order.py checks quant_tcg): no store before
griddepcontrol.wait, every path to ret past a wait, and only the words (qw_ptr, perm_ptr) loaded before it; none
in mode 3."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_cov_offline import build, ptxas_info  # noqa: E402

K, N = 1024, 256
# (block_n, depth, nsub, split, dtype, sym, act)
CONFIGS = [
    (128, 4, 1, 4, torch.float16, False, False),  # the tuner's plans (TCV_PLANS x TCV_SPLITS)
    (128, 4, 1, 16, torch.float16, False, False),
    (128, 2, 1, 4, torch.float16, False, True),
    (64, 2, 1, 16, torch.float16, True, False),
    (64, 2, 2, 4, torch.float16, False, False),  # tcv2
    (128, 1, 1, 8, torch.float16, False, False),
    (64, 3, 2, 2, torch.float16, False, True),
    (64, 8, 1, 16, torch.float16, False, False),  # the deepest ring
    (128, 2, 1, 4, torch.bfloat16, False, False),
    (64, 4, 2, 16, torch.bfloat16, True, True),
]


def _weight(sym: bool, act: bool) -> object:
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight

    torch.manual_seed(0)
    return prepare_gptq_weight(**make_gptq(K, N, 4, 128, sym, act, 1), bits=4, group_size=128, sym=sym)


def _build(bn: int, depth: int, nsub: int, split: int, dtype: torch.dtype, sym: bool, act: bool,
           gdc: int = 0) -> tuple:  # fmt: skip
    from inlaid_worker.kernels.quant_tcv import _tcv_kernel, tcv_args

    w = _weight(sym, act)
    x = torch.zeros(8, K, dtype=dtype)
    y = torch.empty(8, N, dtype=dtype)
    _, args, consts = tcv_args(x, w, 8, bn, split, 4, depth, nsub, y)
    assert consts["HAS_PERM"] == act and consts["DEPTH"] == depth and consts["NSUB"] == nsub
    ck, names = build(_tcv_kernel, args, dict(consts, USE_GDC=gdc), 4, **({"launch_pdl": True} if gdc else {}))
    return ck, names, consts


@pytest.mark.parametrize(("bn", "depth", "nsub", "split", "dtype", "sym", "act"), CONFIGS)
def test_tcv_builds_for_sm90_offline(bn: int, depth: int, nsub: int, split: int, dtype: torch.dtype, sym: bool,
                                     act: bool) -> None:  # fmt: skip
    from inlaid_worker.kernels.quant_tcv import X_SMEM_MAX, staged_bytes

    ck, _, consts = _build(bn, depth, nsub, split, dtype, sym, act)
    ptx = ck.asm["ptx"]
    wgmmas = ptx.count("wgmma.mma_async")
    assert wgmmas >= 8 and wgmmas % 8 == 0, wgmmas
    assert "wgmma.wait_group" in ptx
    assert ("cp.async" in ptx) == (depth > 3), "the per-thread ring: depth 4-8 only"
    assert ck.metadata.shared <= staged_bytes(consts["ITERS"], depth, 8, bn) + 1024 <= X_SMEM_MAX + 1024, (
        ck.metadata.shared, staged_bytes(consts["ITERS"], depth, 8, bn))  # fmt: skip
    info = ptxas_info(ptx)
    assert info["spill_stores"] == 0 and info["spill_loads"] == 0, info


@pytest.mark.parametrize("gdc", [1, 2, 3])
@pytest.mark.parametrize(("bn", "depth", "nsub", "act"), [(128, 4, 1, False), (64, 2, 2, True)])
def test_tcv_pdl_reads_only_words_before_the_wait(gdc: int, bn: int, depth: int, nsub: int, act: bool) -> None:
    from pdl_ptx_order import analyze  # type: ignore[import-not-found]

    ck, names, _ = _build(bn, depth, nsub, 4, torch.float16, False, act, gdc)
    ptx = ck.asm["ptx"]
    rep = analyze(ptx)
    assert rep.waits >= 1 and rep.launches >= 1, rep
    assert not rep.early_writes, rep.early_writes[:3]
    assert not rep.ret_unwaited
    early = {names[i] for _, src in rep.early_loads for i in src if i < len(names)}
    early_ptrs = {n for n in early if n.endswith("_ptr")}
    assert early_ptrs <= {"qw_ptr", "perm_ptr"}, sorted(early_ptrs)
    if gdc == 3:
        assert not early_ptrs, "mode 3 (no prefetch) waits before any load"
    else:
        assert "qw_ptr" in early_ptrs, "modes 1 / 2 prefetch the first words before the wait"
    wait, launch = ptx.index("griddepcontrol.wait"), ptx.index("griddepcontrol.launch_dependents")
    assert (launch < wait) == (gdc != 2), "mode 2 lets dependents launch after the K loop"
