"""The process-wide kernel buffers (split-K workspaces, slot workspaces, the qkv / gate-up sums regions, the row
attention's counters) are normal tensors even when first made under torch.inference_mode: code outside inference
mode (an eager forward's error path zeroing the qkv sums, a test) must still update them in place. An inference
tensor refuses that; on the H200 an eager forward_fast after an inference-mode one failed so (session 19)."""

from __future__ import annotations

import torch
from inlaid_worker.kernels import decode_fused, quant_common, quant_tcw
from kernel_buffers import fresh_workspaces

CPU = torch.device("cpu")


def _made_under_inference_mode() -> list[torch.Tensor]:
    with torch.inference_mode():
        ws, cnt = quant_common.workspace(CPU, 64, 4)
        slots, slot_cnt = quant_tcw.slot_workspace(CPU, 64, 4)
        return [ws, cnt, slots, slot_cnt, quant_common.qkv_sums(CPU, 32), quant_common.gate_up_sums(CPU, 32),
                decode_fused.counters(CPU, 8)]  # fmt: skip


def test_cached_buffers_can_be_zeroed_outside_inference_mode() -> None:
    regions = (quant_common._QKV_SUMS, quant_common._GU_SUMS, decode_fused._COUNTERS)
    saved = [r.pop(CPU, None) for r in regions]
    try:
        with fresh_workspaces(CPU):
            bufs = _made_under_inference_mode()
            for b in bufs:
                assert not b.is_inference()
                b.fill_(1)
                b.zero_()  # raised "Inplace update to inference tensor outside InferenceMode" before
                assert int(b.abs().sum()) == 0
    finally:
        for r, entry in zip(regions, saved, strict=True):
            r.pop(CPU, None)
            if entry is not None:
                r[CPU] = entry
