"""GPTQ bit format: packing round-trips, AutoGPTQ's 3-bit layout, v1/v2 zero points."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from autogptq_oracle import autogptq_pack
from inlaid_worker.quant import QuantSpec, dequantize_packed, pack_weight, rtn_quantize, unpack_weight
from inlaid_worker.quant.pack import pack_rows, unpack_rows


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_rows_round_trip(bits: int) -> None:
    v = torch.randint(0, 2**bits, (96, 7), generator=torch.Generator().manual_seed(bits))
    packed = pack_rows(v, bits)
    assert packed.dtype == torch.int32 and packed.shape == (96 * bits // 32, 7)
    assert torch.equal(unpack_rows(packed, bits, 96), v.to(torch.int32))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_layout_matches_autogptq(bits: int) -> None:
    iw = np.random.default_rng(bits).integers(0, 2**bits, size=(64, 5)).astype(np.uint32)
    ours = pack_rows(torch.from_numpy(iw.astype(np.int64)), bits).numpy().view(np.uint32)
    assert np.array_equal(ours, autogptq_pack(iw, bits))


def test_pack_rows_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_rows(torch.zeros(48, 2, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match="out of range"):
        pack_rows(torch.full((32, 2), 16), 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
def test_weight_round_trip_both_formats(bits: int, sym: bool) -> None:
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    qw = rtn_quantize(w, QuantSpec(bits=bits, group_size=32, sym=sym))
    for fmt in ("gptq", "gptq_v2"):
        if fmt == "gptq" and bool((qw.zeros == 0).any()):
            with pytest.raises(ValueError, match="gptq_v2"):
                pack_weight(qw, fmt)
            continue
        p = pack_weight(qw, fmt)
        assert p.qweight.shape == (128 * bits // 32, 64) and p.qzeros.shape == (4, 64 * bits // 32)
        assert p.scales.dtype == torch.float16 and p.scales.shape == (4, 64)
        codes, zeros = unpack_weight(p)
        assert torch.equal(codes, qw.codes.t()) and torch.equal(zeros, qw.zeros.t())
        assert torch.equal(dequantize_packed(p), qw.dequant)


def test_v1_stores_zero_minus_one() -> None:
    qw = rtn_quantize(torch.randn(32, 64), QuantSpec(bits=4, group_size=32, sym=True))
    p1, p2 = pack_weight(qw, "gptq"), pack_weight(qw, "gptq_v2")
    assert bool((p1.qzeros == 0x77777777).all())  # zero 8 stored as 7 in every nibble
    assert bool((p2.qzeros == -0x77777778).all())  # 0x88888888 as int32


def test_v1_rejects_zero_point_zero() -> None:
    w = torch.rand(32, 64) + 0.1  # all-positive groups: asymmetric zero point 0
    qw = rtn_quantize(w, QuantSpec(bits=4, group_size=32, sym=False))
    with pytest.raises(ValueError, match="gptq_v2"):
        pack_weight(qw, "gptq")
    assert torch.equal(dequantize_packed(pack_weight(qw, "gptq_v2")), qw.dequant)
