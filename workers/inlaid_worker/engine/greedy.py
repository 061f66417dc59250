"""The greedy rows' tokens of an async decode step in one kernel (issue 4: the engine's loop at batch 1).

In the async decode loop (engine/async_step.py) a step whose sampling rows are all plain greedy (no bias, ban,
penalties or logprobs: device_sampler's one argmax) used to queue, after the decode graph: torch's argmax (a ~10 us
reduce at a 32,000 vocabulary, batch 1), a zero-filled overflow tensor, its cast, a stack of the two and their copy to
pinned host memory (a copy-engine transfer between kernels), about 25 us of the step's GPU time with the gaps
between them (bench/results/decode-2026-12-01-s16-b1.md). Here one Triton program a row computes the row's argmax
with torch's semantics (the first NaN if any, else the first index of the maximum; fp16 / bf16 / fp32 compared in
float32, an exact widening; other dtypes are refused) and stores it as int64 into the device tokens (the next step's feed) and, where `host` is
given, also into row 0 of that pinned [2, R] int64 buffer with a 0 overflow flag in row 1: a store through the
buffer's unified address (pinned host memory is mapped into the device's address space under UVA), so no copy-engine
transfer follows. The host reads the buffer after an event recorded behind the kernel (kernel completion makes its
stores to host memory visible to the host).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inlaid_worker.engine.async_step import GREEDY_DTYPES


@triton.jit
def _first_max(v1, i1, v2, i2):
    """torch's argmax order (GreaterOrNan): a NaN beats any number, then the greater value; ties: the lower index."""
    n1 = v1 != v1
    n2 = v2 != v2
    first = (n1 & (~n2 | (i1 < i2))) | (~n1 & ~n2 & ((v1 > v2) | ((v1 == v2) & (i1 < i2))))
    return tl.where(first, v1, v2), tl.where(first, i1, i2)


@triton.jit
def _row_argmax(base, N_COLS: tl.constexpr, BLOCK: tl.constexpr):
    """The row at `base`'s argmax (torch's order: _first_max) as int64, BLOCK columns a chunk."""
    offs = tl.arange(0, BLOCK)
    best_v = float("-inf")
    best_i = 2147483647
    for c0 in tl.static_range(0, N_COLS, BLOCK):  # (the vocabulary is fixed per model: one build)
        idx = c0 + offs
        x = tl.load(base + idx, mask=idx < N_COLS, other=float("-inf")).to(tl.float32)
        cv, ci = tl.reduce((x, idx), 0, _first_max)
        best_v, best_i = _first_max(best_v, best_i, cv, ci)
    return best_i.to(tl.int64)


def _warps(block: int) -> int:
    return 16 if block >= 16384 else 8 if block >= 4096 else 4


@triton.jit
def _greedy_kernel(x_ptr, stride_x, sel_ptr, tok_ptr, host_addr, n_rows, N_COLS: tl.constexpr,
                   SEL: tl.constexpr, HOST: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    r = tl.program_id(0)
    if SEL:
        row = tl.load(sel_ptr + r).to(tl.int64)
    else:
        row = r.to(tl.int64)
    tok = _row_argmax(x_ptr + row * stride_x, N_COLS, BLOCK)
    tl.store(tok_ptr + r, tok)
    if HOST:  # the pinned [2, n_rows] int64 buffer through its unified address: the token, then a 0 overflow flag
        host = host_addr.to(tl.pointer_type(tl.int64))
        tl.store(host + r, tok)
        tl.store(host + n_rows + r, tok * 0)


def greedy_tokens(logits: torch.Tensor, sel: torch.Tensor | None = None, host: torch.Tensor | None = None,
                  out: torch.Tensor | None = None, block: int = 32768) -> torch.Tensor:  # fmt: skip
    """argmax(logits[sel], dim=-1) as int64 [R] on logits' device (sel: int64 row indices on that device; None: every
    row). host: a pinned int64 tensor of at least 2 * R elements (contiguous) that also receives [tokens; zeros] as
    [2, R] (CUDA only). out: the int64 [R] device tensor to write (default: a new one). block: columns a chunk at
    most (a power of two; the tests' small chunks)."""
    if logits.dtype not in GREEDY_DTYPES:
        raise ValueError(f"greedy_tokens: logits must be float16 / bfloat16 / float32, got {logits.dtype}")
    if logits.dim() != 2 or logits.stride(-1) != 1:
        raise ValueError(f"greedy_tokens: logits must be 2-D with unit column stride, got {tuple(logits.shape)}")
    r = int(sel.shape[0]) if sel is not None else int(logits.shape[0])
    tokens = torch.empty(r, dtype=torch.int64, device=logits.device) if out is None else out
    if host is not None:
        if not (logits.is_cuda and host.is_pinned() and host.dtype == torch.int64 and host.is_contiguous()
                and host.numel() >= 2 * r):  # fmt: skip
            raise ValueError("greedy_tokens: host must be a contiguous pinned int64 buffer of 2 * R elements (CUDA)")
    if r == 0:
        return tokens
    v = int(logits.shape[1])
    block = min(triton.next_power_of_2(v), block)
    _greedy_kernel[(r,)](
        logits, logits.stride(0), sel if sel is not None else tokens, tokens, host.data_ptr() if host is not None else 0,
        r, N_COLS=v, SEL=sel is not None, HOST=host is not None, BLOCK=block,
        num_warps=_warps(block),
    )  # fmt: skip
    return tokens
