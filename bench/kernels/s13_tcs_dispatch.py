"""Session 13, benches only: route the bench-only kind "tcs0" (session 12's early slot release, kept to reproduce the
bug the fix removed) through launch_quant_matmul. The ACC_SCALE kinds "tcsa" / "tcs2a" were routed here for the
session's first runs; quant_matmul's dispatcher has routed them since the fix shipped (tcs2a in the H200 table).
Import this module before anything binds launch_quant_matmul by name; it also rebinds quant_swiglu's copy (the fused
gate/up path of the decode step)."""

from __future__ import annotations

from inlaid_worker.kernels import quant_matmul as _qm
from inlaid_worker.kernels import quant_swiglu as _qs

EARLY_KINDS = ("tcs0",)  # = quant_tcs.EARLY_KINDS (that module needs Gluon's Hopper support: imported late)
_orig = _qm.launch_quant_matmul


def launch_quant_matmul(x2, w, cfg, y) -> None:  # noqa: ANN001 - quant_matmul's signature
    if cfg.kind in EARLY_KINDS:
        if x2.is_cuda:
            from inlaid_worker.kernels.quant_tcs import launch_tcs

            launch_tcs(x2, w, cfg.block_m, cfg.split_k, cfg.num_stages, cfg.block_n // 64, y, cfg.kind)
        else:  # quant_tc's "tcf": tcs's (q - z) * s operand on the CPU
            _qm.launch_tensor_core(x2, w, cfg.block_m, 64, 128, cfg.split_k, 4, 1, y, kind="tcf")
        return
    _orig(x2, w, cfg, y)


if getattr(_qm.launch_quant_matmul, "__module__", "") != __name__:
    _qm.launch_quant_matmul = launch_quant_matmul
    _qs.launch_quant_matmul = launch_quant_matmul
