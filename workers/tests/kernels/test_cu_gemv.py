"""The CUDA C++ int4 GEMM (bench-only: bench/kernels/cu_gemv.cu, cu_gemv_kernel.py and cu_gemv_pack.py): CPU checks
of the load-time repack and of a torch emulation of the kernel's arithmetic (exact layout, magic-number dequantization,
fragment placement, per-chunk scaling) against the raw-GPTQ reference; GPU checks (CUDA with cuda-python only) of the
kernel itself, in CUDA graphs and under PDL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from cases import make_gptq

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "kernels"))  # (the bench-only modules)
import cu_gemv_kernel as cu_gemv
from cu_gemv_kernel import CuConfig
from cu_gemv_pack import (
    emulate_fragments,
    emulate_gemm,
    fragment_index,
    repack_qweight,
    repack_scales,
    repack_zeros,
    supports,
    unpack_int4,
    unpack_repacked,
)
from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight, unpack_bitstream
from inlaid_worker.kernels.quant_matmul import quant_matmul_reference

GPU = pytest.mark.skipif(not cu_gemv.available(), reason="needs CUDA (sm_90+) and cuda-python")


def _weight(k: int, n: int, sym: bool, act: bool, offset: int = 1, g: int = 128, device: str = "cpu"):  # type: ignore[no-untyped-def]
    raw = make_gptq(k, n, 4, g, sym, act, offset)
    w = prepare_gptq_weight(
        raw["qweight"].to(device), raw["qzeros"].to(device), raw["scales"].to(device), raw["g_idx"].to(device),
        4, g, sym, "gptq" if offset else "gptq_v2",
    )  # fmt: skip
    return raw, w


def test_fragment_index_is_a_bijection() -> None:
    kk, nn = fragment_index(128, 48)
    flat = (kk * 48 + nn).reshape(-1)
    assert flat.numel() == 128 * 48
    assert torch.equal(torch.sort(flat).values, torch.arange(128 * 48))


@pytest.mark.parametrize(("k", "n"), [(128, 16), (256, 48), (512, 2048 + 16)])
def test_repack_is_exact(k: int, n: int) -> None:
    raw, _ = _weight(k, n, False, False)
    q = unpack_bitstream(raw["qweight"], 4, k, dim=0).long()
    assert torch.equal(unpack_int4(raw["qweight"]), q)
    wq = repack_qweight(raw["qweight"])
    assert wq.shape == (n // 16, k // 64, 32, 4) and wq.dtype == torch.int32
    assert torch.equal(unpack_repacked(wq, k, n), q)


def test_repack_nibble_positions() -> None:
    """A single nonzero value lands in the word and nibble the kernel's fragment reads it from."""
    k, n = 128, 32
    q = torch.zeros(k, n, dtype=torch.int32)
    kv, nv = 64 + 16 * 2 + 8 + 2 * 3 + 1, 16 + 8 + 5  # chunk 1, word j=2, k+8, t=3, +1; tile 1, row g+8, g=5
    q[kv, nv] = 7
    from inlaid_worker.kernels.gptq_packing import pack_bitstream

    wq = repack_qweight(pack_bitstream(q, 4, 0))
    nz = wq.nonzero().tolist()
    assert nz == [[1, 1, 5 * 4 + 3, 2]]
    # nibble i = 4 (k odd) + 2 (k + 8) + 1 (row g + 8) = 7
    assert int(wq[1, 1, 23, 2]) & 0xFFFFFFFF == 7 << 28


def test_lane_scales_and_zeros_as_the_kernel_reads_them() -> None:
    """Lane g of tile nt reads word g of repack_scales (s[n0 + g] low, s[n0 + g + 8] high) and word g >> 2 of
    repack_zeros, byte g & 3 (z[n0 + g] low nibble, z[n0 + g + 8] high nibble)."""
    k, n = 512, 48
    _, w = _weight(k, n, False, False)
    sc, zr = repack_scales(w.scales), repack_zeros(w.qzeros, n)
    assert sc.shape == (k // 128, n // 16, 8) and zr.shape == (k // 128, n // 16, 2)
    z = unpack_bitstream(w.qzeros, 4, n, dim=1)  # stored zeros [G, N]
    s_bits = w.scales.view(torch.int16).to(torch.int64) & 0xFFFF
    for g in range(8):
        pair = sc[:, :, g].to(torch.int64) & 0xFFFFFFFF
        assert torch.equal(pair & 0xFFFF, s_bits[:, g::16])
        assert torch.equal(pair >> 16, s_bits[:, g + 8 :: 16])
        byte = ((zr[:, :, g >> 2].to(torch.int64) & 0xFFFFFFFF) >> (8 * (g & 3))) & 0xFF
        assert torch.equal(byte & 15, z[:, g::16].long())
        assert torch.equal(byte >> 4, z[:, g + 8 :: 16].long())


@pytest.mark.parametrize("sym", [False, True])
def test_emulated_fragments_dequantize_exactly(sym: bool) -> None:
    k, n = 256, 32
    raw, w = _weight(k, n, sym, False)
    q = unpack_bitstream(raw["qweight"], 4, k, dim=0).float()
    z = unpack_bitstream(w.qzeros, 4, n, dim=1).float() + w.zero_offset  # [K/g, N]
    zc = z[torch.arange(k // 64) * 64 // 128]  # per chunk
    tiles = emulate_fragments(repack_qweight(w.qweight), zc.long())  # [N/16, K/16, 16 n, 16 k]
    dense = tiles.float().permute(1, 3, 0, 2).reshape(k, n)  # [K, N]
    assert torch.equal(dense, q - z[torch.arange(k) // 128])


@pytest.mark.parametrize(("sym", "act", "offset"), [(False, False, 1), (True, False, 1), (False, True, 0)])
@pytest.mark.parametrize("m", [1, 5, 16])
def test_emulated_gemm_matches_reference(sym: bool, act: bool, offset: int, m: int) -> None:
    k, n = 512, 64
    raw, w = _weight(k, n, sym, act, offset)
    x = torch.randn(m, k).half()
    ref = quant_matmul_reference(x.float(), raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, offset)
    z = (unpack_bitstream(w.qzeros, 4, n, dim=1) + w.zero_offset).long()
    xg = x[:, w.perm.long()] if w.perm is not None else x
    out = emulate_gemm(xg, repack_qweight(w.qweight), w.scales, z, w.group_size)
    assert float((out - ref).norm() / ref.norm()) < 1e-5


def test_config_math() -> None:
    c = CuConfig(wn=4, wk=2, cs=4, ring=8)
    assert cu_gemv.grid_of(11008, c) == 172 * 4
    assert cu_gemv.row_block(1) == 8 and cu_gemv.row_block(9) == 16
    # 8 warps x 8 stages x 768 B, + 16 chunks of 4 K16 steps x 3 rows x 32 bytes, + the 64 x 8 fp32 reduction
    assert cu_gemv.smem_bytes(4096, 3, c) == 8 * 8 * 768 + 16 * 4 * 3 * 32 + 64 * 8 * 4
    with pytest.raises(ValueError):
        CuConfig(wn=16, wk=2)
    with pytest.raises(ValueError):
        cu_gemv.row_block(17)
    for m in (1, 2, 4, 8, 16):
        cands = cu_gemv.candidates(11008, 4096, m)
        assert cands, m
        assert all(128 <= cu_gemv.grid_of(11008, c) <= 2000 for c in cands)
        assert all(cu_gemv.x_bytes_per_call(11008, 4096, m, c) <= 0.5 * 4096 * 11008 / 2 for c in cands)


def test_supports() -> None:
    _, w = _weight(256, 48, False, False)
    assert supports(w)
    _, w64 = _weight(256, 40, False, False)
    assert not supports(w64)  # N % 16


def test_available_is_false_without_cuda() -> None:
    if not torch.cuda.is_available():
        assert not cu_gemv.available()


@GPU
@pytest.mark.parametrize(
    ("k", "n", "sym", "act", "dtype"),
    [(512, 256, False, False, torch.float16), (4096, 1024, True, False, torch.float16),
     (1024, 512, False, True, torch.float16), (1024, 512, False, False, torch.bfloat16)],
)  # fmt: skip
@pytest.mark.parametrize("m", [1, 3, 8, 16])
@pytest.mark.parametrize("cfg", [CuConfig(1, 4, 1, 8), CuConfig(4, 2, 2, 4), CuConfig(2, 2, 8, 16)])
def test_kernel_matches_fp32_product(k: int, n: int, sym: bool, act: bool, dtype: torch.dtype, m: int,
                                     cfg: CuConfig) -> None:  # fmt: skip
    raw, w = _weight(k, n, sym, act, device="cuda")
    x = torch.randn(m, k, device="cuda").to(dtype)
    ref = quant_matmul_reference(x.float(), raw["qweight"].cuda(), raw["qzeros"].cuda(), raw["scales"].cuda(),
                                 raw["g_idx"].cuda(), 4, 1)  # fmt: skip
    y = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
    cu_gemv.launch_cu_gemv(x, w, cfg, y)
    assert float((y.float() - ref).norm() / ref.norm()) < (2e-2 if dtype == torch.bfloat16 else 3e-3)


@GPU
def test_kernel_in_pdl_graph_matches_eager() -> None:
    from inlaid_worker.kernels import pdl

    _, w1 = _weight(1024, 512, False, False, device="cuda")
    _, w2 = _weight(512, 1024, False, False, device="cuda")
    x = torch.randn(4, 1024, device="cuda").half()
    h = torch.empty(4, 512, device="cuda", dtype=torch.float16)
    y = torch.empty(4, 1024, device="cuda", dtype=torch.float16)

    def chain() -> None:
        cu_gemv.launch_cu_gemv(x, w1, CuConfig(2, 2, 2, 8), h)
        cu_gemv.launch_cu_gemv(h, w2, CuConfig(1, 4, 1, 8), y)

    chain()
    eager = y.clone()
    graph = torch.cuda.CUDAGraph()
    with pdl.scope(1):
        with torch.cuda.graph(graph):
            chain()
    y.zero_()
    graph.replay()
    torch.cuda.synchronize()
    # the split-K sums go through shared-memory atomics: equal up to summation order
    assert torch.allclose(y.float(), eager.float(), rtol=1e-3, atol=1e-3)
