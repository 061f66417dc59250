"""Bit format of the GPTQ checkpoint (AutoGPTQ/GPTQModel/vLLM layout), kept apart from GPTQ itself.

Per linear with K inputs, N outputs, G = K / group_size groups:
  qweight int32 [K * bits / 32, N]  codes packed along K, low bits first; value j of a column sits at bit
                                    j * bits of a little-endian bit stream of 32-bit words (3-bit: 32 values
                                    in 3 words, a value may straddle two words)
  qzeros  int32 [G, N * bits / 32]  zero points packed the same way along N
  scales  fp16  [G, N]
  g_idx   int32 [K]
checkpoint_format "gptq" (v1, the legacy format most readers expect) stores zero - 1 in qzeros; "gptq_v2"
stores zero itself. v1 cannot represent zero == 0 (asymmetric grids of all-positive groups): packing such
zeros in v1 raises, use gptq_v2 for asymmetric checkpoints. We write v1 for symmetric grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from inlaid_worker.kernels.gptq_packing import pack_bitstream, unpack_bitstream

from .grid import check_bits
from .spec import QuantizedWeight

FORMATS = ("gptq", "gptq_v2")


def values_per_block(bits: int) -> int:
    """Smallest number of values that fill whole 32-bit words (32 for 3-bit, 32 / bits otherwise)."""
    check_bits(bits)
    return 32 // math.gcd(32, bits)


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack values: [R, C] ints in [0, 2^bits) along R -> int32 [R * bits / 32, C] (the GPTQ bit stream)."""
    r = values.shape[0]
    vpb = values_per_block(bits)
    if r % vpb != 0:
        raise ValueError(f"{r} values cannot be packed at {bits} bits: need a multiple of {vpb}")
    v = values.to(torch.int64)
    if bool((v < 0).any()) or bool((v >= 2**bits).any()):
        raise ValueError(f"values out of range for {bits} bits")
    return pack_bitstream(v, bits, dim=0)


def unpack_rows(packed: torch.Tensor, bits: int, rows: int) -> torch.Tensor:
    """Inverse of pack_rows: int32 [rows * bits / 32, C] -> int32 [rows, C]."""
    if packed.shape[0] * 32 != rows * bits:
        raise ValueError(f"packed has {packed.shape[0]} words, expected {rows * bits // 32} for {rows} values")
    return unpack_bitstream(packed, bits, rows, dim=0)


@dataclass(frozen=True)
class PackedLinear:
    qweight: torch.Tensor  # int32 [K * bits / 32, N]
    qzeros: torch.Tensor  # int32 [G, N * bits / 32]
    scales: torch.Tensor  # fp16 [G, N]
    g_idx: torch.Tensor  # int32 [K]
    bits: int
    checkpoint_format: str

    @property
    def in_features(self) -> int:
        return int(self.g_idx.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.scales.shape[1])


def check_format(checkpoint_format: str) -> None:
    if checkpoint_format not in FORMATS:
        raise ValueError(f"checkpoint_format must be one of {FORMATS}, got {checkpoint_format!r}")


def pack_weight(qw: QuantizedWeight, checkpoint_format: str = "gptq") -> PackedLinear:
    check_format(checkpoint_format)
    zeros = qw.zeros.t().contiguous()  # [G, N]
    if checkpoint_format == "gptq":
        if bool((zeros == 0).any()):
            raise ValueError("zero point 0 cannot be stored in checkpoint_format 'gptq' (v1); use 'gptq_v2'")
        zeros = zeros - 1
    return PackedLinear(
        qweight=pack_rows(qw.codes.t().contiguous(), qw.bits),
        qzeros=pack_rows(zeros.t().contiguous(), qw.bits).t().contiguous(),
        scales=qw.scales.t().contiguous().half(),
        g_idx=qw.g_idx.to(torch.int32).contiguous(),
        bits=qw.bits,
        checkpoint_format=checkpoint_format,
    )


def unpack_weight(p: PackedLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """codes int32 [K, N] and zero points int32 [G, N] (v1's stored zero - 1 undone)."""
    check_format(p.checkpoint_format)
    codes = unpack_rows(p.qweight, p.bits, p.in_features)
    zeros = unpack_rows(p.qzeros.t().contiguous(), p.bits, p.out_features).t().contiguous()
    if p.checkpoint_format == "gptq":
        zeros = zeros + 1
    return codes, zeros


def dequantize_packed(p: PackedLinear) -> torch.Tensor:
    """W_hat: [N, K] fp32, the weight the checkpoint serves."""
    codes, zeros = unpack_weight(p)
    gi = p.g_idx.long()
    w_t = p.scales.float()[gi] * (codes.float() - zeros.float()[gi])  # [K, N]
    return w_t.t().contiguous()
