"""3-bit weights in the tensor-core kernels (quant_tc3 + quant_tcg / quant_tcl / the twin quant_tc).

CPU: the operand order, the dequantizing PTX (run by a small emulator of its seven instructions), the x order,
the twin kernel under Triton's interpreter against the dequantized product, and the candidates.
CUDA (sm_90, skipped elsewhere): the Gluon kernels on the 7B MLP shapes against the dequantized product."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import ON_SM90
from inlaid_worker.kernels.gptq_packing import pack_bitstream, unpack_bitstream
from inlaid_worker.kernels.quant_hgemv3 import PAIRS
from inlaid_worker.kernels.quant_matmul_config import candidate_configs
from inlaid_worker.kernels.quant_tc3 import c_base, c_mul, dequant3_ptx, operand_rows3, x_index3

HERE = Path(__file__).resolve().parent
TC = {"tc", "tcf", "tc2", "tcf2", "tcl", "tclp", "tcls"}


def _rows4() -> torch.Tensor:
    from inlaid_worker.kernels.quant_tcg import operand_rows  # Gluon import: nothing is launched

    return operand_rows()


def test_operand_rows3_is_the_pair_order_of_each_triple() -> None:
    rows = operand_rows3()
    assert sorted(rows.tolist()) == list(range(128)), "a permutation of the tile's 128 rows"
    q = torch.randint(0, 8, (128, 5), dtype=torch.int32)
    triples = unpack_bitstream(pack_bitstream(q, 3, 0), 3, 128, 0)  # round trip: 12 words = 4 triples of 32
    for idx in range(128):
        wi, s, t, e = idx // 32, (idx // 8) % 4, (idx // 2) % 4, idx % 2
        assert torch.equal(triples[32 * t + PAIRS[4 * wi + s][2 + e]], q[rows[idx]])


def _f16(bits: np.ndarray) -> np.ndarray:
    return (bits & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64)


def _f16x2(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo16 = lo.astype(np.float16).view(np.uint16).astype(np.uint32)
    return lo16 | (hi.astype(np.float16).view(np.uint16).astype(np.uint32) << 16)


def _emulate(ptx: str, args: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Run the operand PTX (mov, shf.r.clamp, prmt, lop3 0xea, fma/mul.rn.f16x2) on uint32 arrays."""
    regs: dict[str, np.ndarray] = {f"${i}": v.astype(np.uint32) for i, v in args.items()}

    def val(tok: str) -> np.ndarray:
        return regs[tok] if tok in regs else np.uint32(int(tok, 16))

    for line in ptx.splitlines():
        m = re.match(r"(\S+) (\S+), (.+);$", line.strip())
        if not m:
            continue
        op, dst, ops = m.group(1), m.group(2), [o.strip() for o in m.group(3).split(",")]
        if op == "mov.b32":
            out = np.uint32(int(ops[0], 16))
        elif op == "shf.r.clamp.b32":
            wide = val(ops[0]).astype(np.uint64) | (val(ops[1]).astype(np.uint64) << np.uint64(32))
            out = ((wide >> np.uint64(min(int(ops[2]), 32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        elif op == "prmt.b32":
            src = val(ops[0]).astype(np.uint64) | (val(ops[1]).astype(np.uint64) << np.uint64(32))
            sel = int(ops[2], 16)
            out = np.zeros_like(src)
            for b in range(4):
                byte = (src >> np.uint64(8 * ((sel >> 4 * b) & 7))) & np.uint64(0xFF)
                out |= byte << np.uint64(8 * b)
            out = out.astype(np.uint32)
        elif op == "lop3.b32":
            assert ops[3] == "0xea", "(a & b) | c"
            out = (val(ops[0]) & val(ops[1])) | val(ops[2])
        elif op == "fma.rn.f16x2":
            a, b, c = val(ops[0]), val(ops[1]), val(ops[2])
            lo = _f16(a) * _f16(b) + _f16(c)  # exact in float64, then one rounding to fp16
            hi = _f16(a >> 16) * _f16(b >> 16) + _f16(c >> 16)
            out = _f16x2(lo, hi)
        elif op == "mul.rn.f16x2":
            a, b = val(ops[0]), val(ops[1])
            out = _f16x2(_f16(a) * _f16(b), _f16(a >> 16) * _f16(b >> 16))
        else:
            raise AssertionError(f"unexpected instruction {op}")
        regs[dst] = np.broadcast_to(out, args[16].shape).astype(np.uint32)
    return {i: regs[f"${i}"] for i in range(16)}


@pytest.mark.parametrize("full", [False, True])
def test_operand_ptx_gives_q_minus_z_times_s(full: bool) -> None:
    n = 512
    q = torch.randint(0, 8, (32, n), dtype=torch.int32)
    q[:, :8] = torch.arange(8, dtype=torch.int32)[:, None].repeat(4, 8)  # every value at every position
    z = torch.randint(0, 9, (n,))  # stored 0..7 plus the v1 offset
    s = (torch.rand(n) * 0.05 + 0.001).half()
    words = (pack_bitstream(q, 3, 0).to(torch.int64) & 0xFFFFFFFF).numpy()  # [3, n]
    args = {16 + j: words[j] for j in range(3)}
    for kind in range(5):
        args[19 + kind] = (np.int64(c_base(kind)) + z.numpy() * c_mul(kind)) & 0xFFFFFFFF
    s16 = s.view(torch.int16).to(torch.int64).numpy() & 0xFFFF
    args[24] = s16 | (s16 << 16)
    out = _emulate(dequant3_ptx(full), args)
    for i, (_, _, lo, hi) in enumerate(PAIRS):
        for half, v in ((0, lo), (16, hi)):
            want = (q[v] - z).double()
            if full:
                want = (want.half() * s).double()  # one rounding, as the dequantize path
            got = torch.from_numpy(_f16((out[i] >> half).astype(np.uint32)))
            assert torch.equal(got, want), f"pair {i}, value {v}, full={full}"


def test_x_index3_reads_the_3bit_operand_order_with_act_order() -> None:
    k = 384
    rows4, rows3 = _rows4(), operand_rows3()
    perm = torch.randperm(k).int()
    for p in (None, perm):
        idx = x_index3(k, p, torch.device("cpu")).long()
        src = torch.arange(k) if p is None else p.long()
        for k0 in range(0, k, 128):
            assert torch.equal(idx[k0 + rows4], src[k0 + rows3])


def test_x_order3_composes_act_order() -> None:
    from inlaid_worker.kernels.quant_tcl import x_order

    k = 256
    perm = torch.randperm(k).int()
    base = x_order(k, None, torch.device("cpu"), 3)
    assert torch.equal(base[:128], operand_rows3()) and torch.equal(base[128:], operand_rows3() + 128)
    idx = x_order(k, perm, torch.device("cpu"), 3)
    x = torch.randn(3, k, dtype=torch.float64)
    w = torch.randn(k, 4, dtype=torch.float64)  # packed (act-ordered) rows
    assert torch.allclose(x[:, idx] @ w[base], x[:, perm.long()] @ w)


@pytest.fixture(scope="module")
def interpreted() -> dict:
    """tc3_cases.py's CPU cases and the CUDA test's configs, under TRITON_INTERPRET=1 in one subprocess ("all")."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{HERE.parents[1]}{os.pathsep}{HERE}")
    proc = subprocess.run([sys.executable, str(HERE / "tc3_cases.py"), "all"], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_twin_matches_the_dequantized_product_under_the_interpreter(interpreted: dict) -> None:
    """quant_tc (plain Triton) with 3-bit weights: sym/asym, v1/v2 zeros, act-order, split-K, odd N, tc and tcf."""
    errs: dict[str, float] = interpreted["cases"]
    assert len(errs) == 5
    for case_id, err in errs.items():
        assert err < 2e-3, f"{case_id}: rel err {err}"


def _kinds(m: int, bits: int = 3, dtype: torch.dtype = torch.float16, k: int = 4096) -> set[str]:
    return {c.kind for c in candidate_configs(m, 11008, k, 128, bits, dtype)}


def test_3bit_candidates_use_the_tensor_cores_from_m8() -> None:
    for m in (8, 16, 33, 64, 100, 256):
        assert _kinds(m) & {"tc", "tcf"}, m
        assert not _kinds(m) & {"tc2", "tcf2"}, "the 3-bit operand is built whole"
    for m in (64, 256, 512):
        assert "tcl" in _kinds(m)
    for m in (1, 2, 4):
        assert not _kinds(m) & TC, "M <= 4 stays with hgemv3"
    assert not _kinds(16, dtype=torch.bfloat16) & TC, "the 3-bit operand is fp16 only"
    assert not _kinds(16, k=4096 + 64) & TC, "K tiles of 128"
    first = candidate_configs(16, 11008, 4096, 128, 3)[0]
    assert first.kind not in TC, "the untuned default does not change"


def test_3bit_tensor_core_candidates_can_be_withdrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INLAID_QMM_TC3", "0")
    assert not _kinds(16) & TC and not _kinds(256) & TC
    assert _kinds(16, bits=4) & TC, "int4 is not affected"


def test_3bit_launch_rejects_bf16_and_split_operands() -> None:
    from inlaid_worker.kernels.quant_tcg import tcg_args

    sys.path.insert(0, str(HERE))
    from tc3_cases import make_weight  # type: ignore[import-not-found]

    w, _ = make_weight(256, 64, False, False, 1, "cpu")
    y = torch.empty(8, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="fp16 3-bit"):
        tcg_args(torch.zeros(8, 256, dtype=torch.bfloat16), w, 8, 64, 1, 4, 1, False, 1, y)
    with pytest.raises(ValueError, match="built whole"):
        tcg_args(torch.zeros(8, 256, dtype=torch.float16), w, 8, 64, 1, 4, 1, False, 2, y)


def test_cuda_test_configs_run_through_the_twin(interpreted: dict) -> None:
    """The CUDA test's helper and configs (tcl kinds run as the twin's tcf here), small shapes, interpreter."""
    bad: dict[str, list[str]] = interpreted["gpu-configs"]
    assert sorted(bad) == ["16", "256", "64", "8"] and not any(bad.values()), bad


_WEIGHTS: dict[tuple, tuple] = {}


@pytest.mark.skipif(not ON_SM90, reason="the Gluon kernels need an sm_90 GPU")
@pytest.mark.parametrize("m", [8, 16, 64, 256])
@pytest.mark.parametrize("sym,act", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("k,n", [(4096, 11008), (11008, 4096)])
def test_gluon_3bit_matches_the_dequantized_product(m: int, sym: bool, act: bool, k: int, n: int) -> None:
    sys.path.insert(0, str(HERE))
    from tc3_cases import GPU_CONFIGS, check_configs, make_weight_fast  # type: ignore[import-not-found]

    key = (k, n, sym, act)
    if key not in _WEIGHTS:
        _WEIGHTS.clear()
        _WEIGHTS[key] = make_weight_fast(k, n, sym, act, "cuda")
    w, ref = _WEIGHTS[key]
    assert check_configs(w, ref, m, GPU_CONFIGS[m], "cuda") == []
