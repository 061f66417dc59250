"""Load-time repack of a 4-bit GPTQ qweight into the fragment layout of the CUDA GEMV (cu_gemv.cu), and a pure-torch
emulation of that kernel's arithmetic (the CPU tests' reference for the layout and the magic-number dequantization).

Layout (int32 [N/16, K/64, 32, 4]): tile nt (16 output columns n0 = 16 nt), chunk c (64 rows of K, k0 = 64 c + 16 j
for word j), lane l = 4 g + t. Nibble i (bits 4i..4i+3) of word [nt, c, l, j] holds
    W[k0 + 2t + (i >> 2) + 8 ((i >> 1) & 1), n0 + g + 8 (i & 1)]
so that LOP3 with the fp16 magic 0x6400 gives an mma.m16n8k16 A fragment (A = W^T, rows = n, cols = k):
bits 0-3 / 16-19 -> reg 0 (row g, k 2t / 2t+1), 4-7 / 20-23 -> reg 1 (row g+8), the same after >> 8 -> regs 2, 3
(k + 8). A chunk of one tile is 512 contiguous bytes: one 16-byte load per lane. Exact: a permutation of nibbles.
"""

from __future__ import annotations

import torch
from inlaid_worker.kernels.gptq_packing import GPTQWeight, _to_int32_bits

_CHUNK_COLS = 2048  # columns per repack step: bounds the transient int64 memory


def supports(w: GPTQWeight) -> bool:
    """Shapes the CUDA GEMV handles: 4-bit, K % 64, N % 16, groups of a multiple of 64 rows."""
    return w.bits == 4 and w.in_features % 64 == 0 and w.out_features % 16 == 0 and w.group_size % 64 == 0


def unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """GPTQ int4 qweight [K/8, N] -> values int64 [K, N] (value k at bits 4 (k % 8) of word k // 8)."""
    kw, n = qweight.shape
    shifts = 4 * torch.arange(8, device=qweight.device, dtype=torch.int64).view(1, 8, 1)
    return ((qweight.to(torch.int64).view(kw, 1, n) >> shifts) & 15).reshape(kw * 8, n)


def repack_qweight(qweight: torch.Tensor) -> torch.Tensor:
    """int32 [K/8, N] (GPTQ 4-bit) -> int32 [N/16, K/64, 32, 4] (the kernel's fragment layout)."""
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    if k % 64 or n % 16:
        raise ValueError(f"the CUDA GEMV needs K % 64 == 0 and N % 16 == 0, got K={k} N={n}")
    shifts = 4 * torch.arange(8, device=qweight.device, dtype=torch.int64)
    parts = []
    for c0 in range(0, n, _CHUNK_COLS):
        q = unpack_int4(qweight[:, c0 : c0 + _CHUNK_COLS])  # [K, n']
        nt = q.shape[1] // 16
        # k = 64 c + 16 j + 8 kb + 2 t + kp, n = 16 nt + 8 nr + g; nibble i = 4 kp + 2 kb + nr
        v = q.view(k // 64, 4, 2, 4, 2, nt, 2, 8).permute(5, 0, 7, 3, 1, 4, 2, 6).reshape(nt, k // 64, 32, 4, 8)
        parts.append(_to_int32_bits((v << shifts).sum(-1)))
    return torch.cat(parts, 0).contiguous()


def repack_scales(scales: torch.Tensor) -> torch.Tensor:
    """fp16 [G, N] -> int32 [G, N/16, 8]: word g of tile nt = (s[16 nt + g] low, s[16 nt + g + 8] high), the scale pair
    of lane group g (same bytes, reordered)."""
    gr, n = scales.shape
    pairs = scales.contiguous().view(gr, n // 16, 2, 8).transpose(2, 3).contiguous()  # [G, NT, 8, 2] fp16
    return pairs.view(torch.int32).view(gr, n // 16, 8)


def repack_zeros(qzeros: torch.Tensor, n: int) -> torch.Tensor:
    """int32 [G, N/8] packed 4-bit stored zeros -> int32 [G, N/16, 2]: byte g of tile nt's 8 bytes =
    z[16 nt + g] | z[16 nt + g + 8] << 4 (stored values; same bytes, reordered)."""
    gr = qzeros.shape[0]
    z = unpack_int4(qzeros.t().contiguous()).t()[:, :n].reshape(gr, n // 16, 2, 8)  # [G, NT, 2 (lo/hi), 8 (g)]
    b = z[:, :, 0, :] | (z[:, :, 1, :] << 4)  # [G, NT, 8] bytes
    words = (b.view(gr, n // 16, 2, 4) << (8 * torch.arange(4, device=qzeros.device))).sum(-1)
    return _to_int32_bits(words).contiguous()


def fragment_index(k: int, n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(k index, n index) int64 [N/16, K/64, 32, 4, 8] of every nibble of the repacked layout, from the formula."""
    nt = torch.arange(n // 16, device=device).view(-1, 1, 1, 1, 1)
    c = torch.arange(k // 64, device=device).view(1, -1, 1, 1, 1)
    lane = torch.arange(32, device=device).view(1, 1, -1, 1, 1)
    j = torch.arange(4, device=device).view(1, 1, 1, -1, 1)
    i = torch.arange(8, device=device).view(1, 1, 1, 1, -1)
    g, t = lane // 4, lane % 4
    kk = 64 * c + 16 * j + 2 * t + (i >> 2) + 8 * ((i >> 1) & 1)
    nn = 16 * nt + g + 8 * (i & 1)
    return kk.expand(n // 16, k // 64, 32, 4, 8), nn.expand(n // 16, k // 64, 32, 4, 8)


def unpack_repacked(wq: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Inverse of repack_qweight through fragment_index: values int64 [K, N]."""
    shifts = 4 * torch.arange(8, device=wq.device, dtype=torch.int64)
    nib = (wq.to(torch.int64).unsqueeze(-1) >> shifts) & 15  # [NT, KC, 32, 4, 8]
    kk, nn = fragment_index(k, n, wq.device)
    out = torch.empty(k, n, dtype=torch.int64, device=wq.device)
    out[kk.reshape(-1), nn.reshape(-1)] = nib.reshape(-1)
    return out


def _halves(bits32: torch.Tensor) -> torch.Tensor:
    """int64 [..] 32-bit patterns -> fp16 [.., 2] (low half, high half)."""
    lo, hi = bits32 & 0xFFFF, (bits32 >> 16) & 0xFFFF
    pair = torch.stack([lo, hi], -1)
    return torch.where(pair >= 2**15, pair - 2**16, pair).to(torch.int16).view(torch.float16)


def emulate_fragments(wq: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The kernel's dequantization (fp16 path) in torch: (q - z) as fp16 tiles W^T [N/16, K/16, 16 (n), 16 (k)].

    zeros: int [K/64 chunks, N] effective zero per chunk and column. Mirrors cu_gemv.cu bit for bit: LOP3 (a & b) | c
    with 0x64006400, HSUB2 (1024 + z) for regs 0 / 2, HFMA2 x 1/16 + (960 - (1024 + z)) for regs 1 / 3, and the
    mma.m16n8k16 A-fragment placement (reg r: row g + 8 (r & 1), cols 2t + 8 (r >> 1) + {0, 1}).
    """
    nt, kc = wq.shape[0], wq.shape[1]
    w = wq.to(torch.int64) & 0xFFFFFFFF  # [NT, KC, 32, 4]
    lane = torch.arange(32)
    g, t = lane // 4, lane % 4
    z = zeros.to(torch.int64).view(kc, nt, 16).permute(1, 0, 2)  # [NT, KC, 16]
    zg = z[:, :, g].unsqueeze(-1)  # [NT, KC, 32, 1] zero of row g
    zg8 = z[:, :, g + 8].unsqueeze(-1)
    zl = _halves((0x6400 + zg) * 0x10001).float()
    zh = (960.0 - _halves((0x6400 + zg8) * 0x10001).float()).half().float()
    magic = 0x64006400
    regs = [
        _halves((w & 0x000F000F) | magic).float() - zl,
        (_halves((w & 0x00F000F0) | magic).float() * (1 / 16) + zh),
        _halves(((w >> 8) & 0x000F000F) | magic).float() - zl,
        (_halves(((w >> 8) & 0x00F000F0) | magic).float() * (1 / 16) + zh),
    ]  # each [NT, KC, 32, 4 (j), 2]: exact in fp16, so fp32 here is bit-identical
    tiles = torch.zeros(nt, kc * 4, 16, 16)
    for r, reg in enumerate(regs):
        rows = g + 8 * (r & 1)
        for e in range(2):
            cols = 2 * t + 8 * (r >> 1) + e
            vals = reg[..., e].permute(0, 1, 3, 2).reshape(nt, kc * 4, 32)  # [NT, K16 steps, lane]
            tiles[:, :, rows, cols] = vals
    return tiles.half()


def emulate_gemm(
    x: torch.Tensor, wq: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int
) -> torch.Tensor:
    """The kernel's product in torch: per 64-row chunk an fp32 sum of (q - z) x (exact tiles), times the fp16 scale,
    accumulated in fp32. x fp16 [M, K] (already in packed row order); zeros int [K/g, N] effective; -> fp32 [M, N]."""
    nt, kc = wq.shape[0], wq.shape[1]
    n = nt * 16
    chunk_group = torch.arange(kc) * 64 // group
    tiles = emulate_fragments(wq, zeros[chunk_group]).float()  # [NT, K16, 16 n, 16 k]
    wt = tiles.view(nt, kc, 4, 16, 16).permute(1, 2, 4, 0, 3).reshape(kc, 64, n)  # [chunk, 64 k, N]
    part = torch.einsum("mck,ckn->mcn", x.float().view(-1, kc, 64), wt)  # [M, chunk, N]
    return (part * scales.float()[chunk_group].unsqueeze(0)).sum(1)
