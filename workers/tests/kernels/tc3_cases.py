"""3-bit tensor-core cases (quant_tc3): run in-process on CUDA (the Gluon kernels) or as a script under
TRITON_INTERPRET=1 on the CPU (the plain-Triton twin), against the pure-torch dequantized product.

Script mode prints one JSON line: case id -> relative error."""

from __future__ import annotations

import json
import sys

import torch

# (m, k, n, sym, act, zero_offset, kind, split, block_n): CPU cases are small; the twin runs kinds "tc"/"tcf"
CPU_CASES: dict[str, tuple] = {
    "asym-seq-tc-m8": (8, 256, 72, False, False, 1, "tc", 1, 64),
    "asym-act-tc-m8-split2": (8, 256, 64, False, True, 1, "tc", 2, 64),
    "sym-act-tcf-m16": (16, 256, 64, True, True, 1, "tcf", 1, 64),
    "asym-v2-tcf-m5-split2": (5, 384, 96, False, True, 0, "tcf", 2, 64),
    "sym-seq-tc-m24-n40": (24, 128, 40, True, False, 1, "tc", 1, 32),
}


def make_weight(k: int, n: int, sym: bool, act: bool, zero_offset: int, device: str, seed: int = 0) -> tuple:
    """(GPTQWeight, fp32 dequantized W [K, N] on `device`) of random 3-bit g128 weights, values incl. the extremes."""
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from cases import make_gptq  # type: ignore[import-not-found]
    from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul import dequantize_gptq

    torch.manual_seed(seed)
    raw = make_gptq(k, n, 3, 128, sym, act, zero_offset)
    fmt = "gptq" if zero_offset == 1 else "gptq_v2"
    w = prepare_gptq_weight(raw["qweight"].to(device), raw["qzeros"].to(device), raw["scales"].to(device),
                            raw["g_idx"].to(device), bits=3, group_size=128, sym=sym, checkpoint_format=fmt)  # fmt: skip
    ref = dequantize_gptq(raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 3, zero_offset).to(device)
    return w, ref


def make_weight_fast(k: int, n: int, sym: bool, act: bool, device: str) -> tuple:
    """(GPTQWeight, fp32 dequantized W [K, N]) of random 3-bit g128 v1 weights made on `device`: random words
    (every bit pattern is a valid triple), so the 7B shapes need no packing."""
    from inlaid_worker.kernels.gptq_packing import pack_bitstream, prepare_gptq_weight
    from inlaid_worker.kernels.quant_matmul import dequantize_gptq

    torch.manual_seed(k + n + 2 * sym + act)
    qweight = torch.randint(-(2**31), 2**31 - 1, (k * 3 // 32, n), dtype=torch.int32, device=device)
    shape = (k // 128, n)
    zeros = torch.full(shape, 4, device=device) if sym else torch.randint(0, 8, shape, device=device)
    qzeros = pack_bitstream(zeros.int() - 1, 3, 1)  # stored zero - 1 (v1): zero 0 is stored as 7, decodes to 8
    scales = (torch.rand(shape, device=device) * 0.02 + 0.005).half()
    g_idx = (torch.arange(k, device=device) // 128).int()
    if act:
        g_idx = g_idx[torch.randperm(k, device=device)].contiguous()
    w = prepare_gptq_weight(qweight, qzeros, scales, g_idx, bits=3, group_size=128, sym=sym)
    return w, dequantize_gptq(qweight, qzeros, scales, g_idx, 3, 1)


def check_configs(w: object, ref: torch.Tensor, m: int, configs: tuple, device: str) -> list[str]:
    """Failures of launch_tensor_core for each (kind, block_m, block_n, split, warps, stages), each run twice (the
    split-K workspace must come back clean) against x @ ref; [] when all agree (rel err < 2e-3)."""
    from inlaid_worker.kernels.quant_tc import launch_tensor_core

    k, n = ref.shape
    x = torch.randn(m, k, device=device).half()
    want = x.double() @ ref.double()  # no TF32 in the reference
    bad = []
    for kind, bm, bn, split, warps, stages in configs:
        for rep in range(2):
            y = torch.full((m, n), float("nan"), device=device, dtype=torch.float16)
            launch_tensor_core(x, w, bm, bn, 128, split, warps, stages, y, kind)  # type: ignore[arg-type]
            err = float((y.double() - want).norm() / want.norm())
            if not err < 2e-3:
                bad.append(f"{kind} bm={bm} bn={bn} split={split} stages={stages} run {rep}: rel err {err}")
    return bad


# CUDA: (kind, block_m, block_n, split, warps, stages) per M; every kernel family the 3-bit candidates use
GPU_CONFIGS = {
    8: (("tc", 8, 64, 2, 4, 1),),  # words in registers, fp32 scaling
    16: (("tcf", 16, 64, 2, 4, 4),),  # cp.async word ring (rows 4t + 3 unused), scale in the operand
    64: (("tc", 64, 64, 2, 4, 1), ("tcl", 64, 64, 2, 4, 4)),
    256: (("tcl", 128, 64, 1, 4, 2), ("tcls", 128, 128, 2, 8, 4)),
}


def run(m: int, k: int, n: int, sym: bool, act: bool, zero_offset: int, kind: str, split: int, block_n: int,
        device: str) -> float:  # fmt: skip
    from inlaid_worker.kernels.quant_tc import launch_tensor_core

    w, ref = make_weight(k, n, sym, act, zero_offset, device)
    x = torch.randn(m, k, device=device).half()
    y = torch.empty(m, n, device=device, dtype=torch.float16)
    bm = max(8, min(64, 1 << (m - 1).bit_length()))
    warps = block_n // 16 if kind.startswith("tcl") else 4
    stages = 2 if kind.startswith("tcl") else 1
    launch_tensor_core(x, w, bm if device == "cpu" else bm, block_n, 128, split, warps, stages, y, kind)
    out = y.double()
    want = x.double() @ ref.double()
    return float((out - want).norm() / want.norm())


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from cases import _patch_interpreter_for_numpy  # type: ignore[import-not-found]

    _patch_interpreter_for_numpy()
    out = {}
    if sys.argv[1:] in (["gpu-configs"], ["all"]):  # the CUDA test's configs through the twin, small shapes
        w, ref = make_weight_fast(256, 128, False, True, "cpu")
        out["gpu-configs"] = {m: check_configs(w, ref, m, c, "cpu") for m, c in GPU_CONFIGS.items()}
    if sys.argv[1:] != ["gpu-configs"]:
        out["cases"] = {cid: run(*p, device="cpu") for cid, p in CPU_CASES.items()}
    # "all": both in one process (test_quant_tc3's fixture); else the one asked for, as before
    print(json.dumps(out if sys.argv[1:] == ["all"] else next(iter(out.values()))))
