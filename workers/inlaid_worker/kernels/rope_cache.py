"""Rotary embedding of q and k fused with the paged KV-cache write (Triton), plus its torch reference.

From the fused projection output qkv [T, heads*D + 2*kv_heads*D] (q | k | v), per row t:
    q_out[t] = rope(q[t]);   k_cache/v_cache at slot_mapping[t] <- rope(k[t]), v[t]   (slot -1: not written)
rope(x) = x * cos[t] + rotate_half(x) * sin[t], Hugging Face's "rotate half" layout; cos, sin [T, D].
One program per (row, head); programs past `heads` handle one KV head each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import gdc_enter, gdc_late, launch_kw


@triton.jit
def _rope_cache_kernel(
    qkv_ptr, cos_ptr, sin_ptr, slot_ptr, q_ptr, k_ptr, v_ptr,
    stride_t, stride_cs, stride_qt, stride_qh, stride_slot, stride_kh, stride_vslot, stride_vh,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, KV_SIZE: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    t = tl.program_id(0)
    h = tl.program_id(1)
    gdc_enter(USE_GDC)  # everything here was written by earlier kernels (kernels.pdl)
    half: tl.constexpr = HEAD_DIM // 2
    i = tl.arange(0, HALF_PAD)
    mask = i < half
    c1 = tl.load(cos_ptr + t * stride_cs + i, mask=mask, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + t * stride_cs + half + i, mask=mask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr + t * stride_cs + i, mask=mask, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + t * stride_cs + half + i, mask=mask, other=0.0).to(tl.float32)
    row = qkv_ptr + t * stride_t + h * HEAD_DIM  # q heads, then k heads (same stride)
    x1 = tl.load(row + i, mask=mask, other=0.0)
    x2 = tl.load(row + half + i, mask=mask, other=0.0)
    dt = x1.dtype
    # rounding as the torch reference: each product in the activation dtype, then their sum
    o1 = ((x1.to(tl.float32) * c1).to(dt).to(tl.float32) + (-x2.to(tl.float32) * s1).to(dt).to(tl.float32)).to(dt)
    o2 = ((x2.to(tl.float32) * c2).to(dt).to(tl.float32) + (x1.to(tl.float32) * s2).to(dt).to(tl.float32)).to(dt)
    gdc_late(USE_GDC)
    if h < HEADS:
        dst = q_ptr + t * stride_qt + h * stride_qh
        tl.store(dst + i, o1, mask=mask)
        tl.store(dst + half + i, o2, mask=mask)
    else:
        slot = tl.load(slot_ptr + t).to(tl.int64)
        if slot >= 0:
            g = h - HEADS
            kd = k_ptr + slot * stride_slot + g * stride_kh
            tl.store(kd + i, o1.to(k_ptr.dtype.element_ty), mask=mask)
            tl.store(kd + half + i, o2.to(k_ptr.dtype.element_ty), mask=mask)
            vs = row + KV_SIZE  # this KV head's v columns
            vd = v_ptr + slot * stride_vslot + g * stride_vh
            tl.store(vd + i, tl.load(vs + i, mask=mask, other=0.0).to(v_ptr.dtype.element_ty), mask=mask)
            tl.store(vd + half + i, tl.load(vs + half + i, mask=mask, other=0.0).to(v_ptr.dtype.element_ty),
                     mask=mask)  # fmt: skip


def rope_and_cache(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_mapping: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int,
) -> torch.Tensor:  # fmt: skip
    """qkv [T, (heads + 2*kv_heads) * D]; cos, sin [T, D]; caches [blocks, block_size, kv_heads, D].
    Returns rotated q [T, heads, D]; writes rotated k and v into the caches (see the module docstring)."""
    t = qkv.shape[0]
    kv_heads, d = k_cache.shape[2], k_cache.shape[3]
    if qkv.shape[1] != (heads + 2 * kv_heads) * d or qkv.stride(1) != 1 or cos.shape != (t, d) or d % 2:
        raise ValueError(f"rope_and_cache: qkv {tuple(qkv.shape)}, cos {tuple(cos.shape)}, {heads} heads, "
                         f"cache {tuple(k_cache.shape)} do not match")  # fmt: skip
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and cos.stride(1) == 1 and sin.stride() == cos.stride()):
        raise ValueError("rope_and_cache needs contiguous caches and row-major cos/sin")
    q = torch.empty(t, heads, d, dtype=qkv.dtype, device=qkv.device)
    if t == 0:
        return q
    slot_stride = kv_heads * d
    _rope_cache_kernel[(t, heads + kv_heads)](
        qkv, cos, sin, slot_mapping, q, k_cache, v_cache,
        qkv.stride(0), cos.stride(0), q.stride(0), q.stride(1), slot_stride, d, slot_stride, d,
        HEADS=heads, HEAD_DIM=d, HALF_PAD=triton.next_power_of_2(d // 2), KV_SIZE=kv_heads * d, num_warps=1,
        **launch_kw(),
    )  # fmt: skip
    return q


def rope_and_cache_reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_mapping: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int,
) -> torch.Tensor:  # fmt: skip
    """Pure torch (model.rope.apply_rope + model.attention.write_kv), same contract."""
    from inlaid_worker.model.attention import write_kv
    from inlaid_worker.model.rope import apply_rope

    t = qkv.shape[0]
    kv_heads, d = k_cache.shape[2], k_cache.shape[3]
    q = qkv[:, : heads * d].reshape(t, heads, d)
    k = qkv[:, heads * d : (heads + kv_heads) * d].reshape(t, kv_heads, d)
    v = qkv[:, (heads + kv_heads) * d :].reshape(t, kv_heads, d)
    q, k = apply_rope(q, cos[:, None], sin[:, None]), apply_rope(k, cos[:, None], sin[:, None])
    write_kv(k_cache, v_cache, k, v, slot_mapping.long())
    return q
