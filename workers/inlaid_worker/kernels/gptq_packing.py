"""GPTQ bit packing (pure torch) and the load-time transform to a kernel-ready weight.

Standard GPTQ layout (AutoGPTQ / GPTQModel / vLLM, checkpoint_format "gptq" = v1, "gptq_v2" = v2):
- qweight int32 [K*bits/32, N]: column n is a little-endian bit stream along K, value k at bit k*bits
  (3-bit packs 32 values into 3 words, crossing word boundaries);
- qzeros  int32 [K/g, ceil(N*bits/32)]: the same bit stream along N; v1 stores zero-1;
- scales  fp16  [K/g, N]; g_idx int32 [K]: group of input row k (act-order: not monotonic).

Act-order is removed once at load: rows of qweight are permuted so that groups become contiguous, and
the kernel gathers x's columns through `perm` instead (x @ W == x[:, perm] @ W[perm]).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
CHECKPOINT_FORMATS = {"gptq": 1, "gptq_v1": 1, "gptq_v2": 0}


def _to_int32_bits(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 with the same bit pattern."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_bitstream(values: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack non-negative ints < 2^bits along `dim` into int32 words, value i at bit i*bits.

    The packed length is ceil(len*bits/32); padding bits are zero.
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    v = values.movedim(dim, 0).to(torch.int64)  # [L, ...]
    length = v.shape[0]
    n_words = -(-length * bits // 32)
    plane_shift = torch.arange(bits, device=v.device).view(1, bits, *([1] * (v.dim() - 1)))
    stream = ((v.unsqueeze(1) >> plane_shift) & 1).reshape(length * bits, *v.shape[1:])  # bit stream
    pad = n_words * 32 - length * bits
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad, *v.shape[1:])], 0)
    stream = stream.reshape(n_words, 32, *v.shape[1:])
    word_shift = torch.arange(32, device=v.device).view(1, 32, *([1] * (v.dim() - 1)))
    words = (stream << word_shift).sum(1)
    return _to_int32_bits(words).movedim(0, dim).contiguous()


def unpack_bitstream(words: torch.Tensor, bits: int, length: int, dim: int) -> torch.Tensor:
    """Inverse of pack_bitstream: int32 words along `dim` -> int32 values [.., length, ..]."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    w = words.movedim(dim, 0).to(torch.int64) & 0xFFFFFFFF
    n_words = w.shape[0]
    if n_words * 32 < length * bits:
        raise ValueError(f"{n_words} words cannot hold {length} values of {bits} bits")
    word_shift = torch.arange(32, device=w.device).view(1, 32, *([1] * (w.dim() - 1)))
    stream = ((w.unsqueeze(1) >> word_shift) & 1).reshape(n_words * 32, *w.shape[1:])
    stream = stream[: length * bits].reshape(length, bits, *w.shape[1:])
    plane_shift = torch.arange(bits, device=w.device).view(1, bits, *([1] * (w.dim() - 1)))
    values = (stream << plane_shift).sum(1)
    return values.to(torch.int32).movedim(0, dim).contiguous()


def _permute_packed_rows(qweight: torch.Tensor, bits: int, k: int, order: torch.Tensor) -> torch.Tensor:
    """Unpack, reorder rows, repack; column chunks bound the transient int64 memory."""
    chunks = []
    for c0 in range(0, qweight.shape[1], 2048):
        values = unpack_bitstream(qweight[:, c0 : c0 + 2048], bits, k, dim=0)[order]
        chunks.append(pack_bitstream(values, bits, dim=0))
    return torch.cat(chunks, 1)


@dataclass(frozen=True)
class GPTQWeight:
    """A GPTQ linear ready for `quant_matmul`: groups contiguous along K, act-order folded into `perm`."""

    qweight: torch.Tensor  # int32 [K*bits/32, N]
    qzeros: torch.Tensor  # int32 [K/g, ceil(N*bits/32)], stored zeros (v1: zero-1)
    scales: torch.Tensor  # fp16 [K/g, N]
    perm: torch.Tensor | None  # int32 [K]: kernel reads x[:, perm[k]] for packed row k; None = identity
    bits: int
    group_size: int  # rows per group (K when the checkpoint used group_size -1)
    sym: bool
    zero_offset: int  # 1 for v1 checkpoints (stored zero-1), 0 for v2
    in_features: int  # K
    out_features: int  # N


def _validate(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, bits: int, g: int) -> None:
    if bits not in (3, 4):
        raise ValueError(f"quant_matmul supports 3- and 4-bit weights, got bits={bits}")
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError("qweight and qzeros must be int32")
    k = qweight.shape[0] * 32 // bits
    n = qweight.shape[1]
    if (qweight.shape[0] * 32) % bits or k % 32:
        raise ValueError(f"qweight rows {qweight.shape[0]} do not pack a K that is a multiple of 32")
    if k % g:
        raise ValueError(f"K={k} is not a multiple of group_size={g}")
    if tuple(scales.shape) != (k // g, n):
        raise ValueError(f"scales shape {tuple(scales.shape)} != {(k // g, n)}")
    if tuple(qzeros.shape) != (k // g, -(-n * bits // 32)):
        raise ValueError(f"qzeros shape {tuple(qzeros.shape)} != {(k // g, -(-n * bits // 32))}")


def prepare_gptq_weight(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int,
    sym: bool,
    checkpoint_format: str = "gptq",
) -> GPTQWeight:
    """Validate a checkpoint's tensors and fold act-order into a row permutation (done once, at load)."""
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint_format must be one of {sorted(CHECKPOINT_FORMATS)}")
    k = qweight.shape[0] * 32 // bits
    g = k if group_size == -1 else group_size
    if g <= 0 or g % 32:
        raise ValueError(f"group_size must be -1 or a positive multiple of 32, got {group_size}")
    _validate(qweight, qzeros, scales, bits, g)
    zero_offset = CHECKPOINT_FORMATS[checkpoint_format]
    n = qweight.shape[1]
    if sym:
        zeros = unpack_bitstream(qzeros, bits, n, dim=1) + zero_offset
        if not bool((zeros == 2 ** (bits - 1)).all()):
            raise ValueError(f"sym=True but qzeros do not all decode to {2 ** (bits - 1)}")
    perm = None
    if g_idx is not None:
        g_idx = g_idx.to(device=qweight.device, dtype=torch.int64)
        if tuple(g_idx.shape) != (k,):
            raise ValueError(f"g_idx shape {tuple(g_idx.shape)} != {(k,)}")
        if not bool((g_idx == torch.arange(k, device=g_idx.device) // g).all()):
            counts = torch.bincount(g_idx, minlength=k // g)
            if counts.numel() != k // g or not bool((counts == g).all()):
                raise ValueError("g_idx must assign exactly group_size rows to each group")
            order = torch.argsort(g_idx, stable=True)  # packed row k' holds original row order[k']
            qweight = _permute_packed_rows(qweight, bits, k, order)
            perm = order.to(torch.int32).contiguous()
    return GPTQWeight(
        qweight=qweight.contiguous(),
        qzeros=qzeros.contiguous(),
        scales=scales.to(torch.float16).contiguous(),
        perm=perm,
        bits=bits,
        group_size=g,
        sym=sym,
        zero_offset=zero_offset,
        in_features=k,
        out_features=n,
    )


def to_k_major(w: GPTQWeight) -> GPTQWeight:
    """The same weight with qweight stored K-major: an [N, K*bits/32] contiguous buffer exposed transposed,
    so it still reads as [K*bits/32, N] and every kernel (they all take strides) runs unchanged.

    Why: the MMA kernel stages [BLOCK_N, BLOCK_K/8] word tiles K-contiguous in shared memory; from the
    standard N-contiguous layout Triton copies them 4 bytes at a time, from this one 16 bytes at a time
    (PTX of the sm_90 build: 48 x 4-byte vs 12 x 16-byte cp.async per thread). Opt-in: measured once, no
    gain (4096x4096, M=1; bench/kernels/NOTES.md v3c).
    """
    return replace(w, qweight=w.qweight.t().contiguous().t())
