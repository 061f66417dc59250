"""Paged KV cache writes and the torch reference for causal attention over block tables.

KV cache of one layer: k_cache, v_cache [num_blocks, block_size, kv_heads, head_dim]. A token at cache slot
`s` lives at block s // block_size, offset s % block_size. Each sequence's context is the first
`context_len` slots named by its block table; its new tokens are the last `query_len` of them.

Semantics of `paged_attention_reference` (one step, S sequences, rows grouped by sequence):
    for each sequence s, new-token row i (absolute position p = context_len - query_len + i):
        out[row] = softmax(q[row] . K[j] * scale for j <= p) @ V[j]      (K, V: its cached context)
Grouped-query attention: query head h reads KV head h // (num_heads // kv_heads).
Decode rows (query_len == 1) go through one padded batched call; prefill chunks run one call each, so a long
chunk never inflates the decode batch's padding. A faster kernel can replace this behind the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PrefillChunk:
    rows: slice  # this chunk's rows among the T step rows
    kv_slots: torch.Tensor  # [context_len] int64: cache slots of its whole context, in position order
    mask: torch.Tensor  # [query_len, context_len] bool: True where a query may attend


@dataclass(frozen=True)
class AttentionMetadata:
    """Everything attention needs about one step's layout, built once per step and shared by every layer."""

    slot_mapping: torch.Tensor  # [T] int64: where each new token's K/V is written (-1 = do not write)
    decode_rows: torch.Tensor  # [D] int64: rows of single-token sequences
    decode_kv_slots: torch.Tensor  # [D, max_ctx] int64: their context slots, padded with 0
    decode_mask: torch.Tensor  # [D, 1, 1, max_ctx] bool: True on real (non-padding) context slots
    prefills: tuple[PrefillChunk, ...]

    @staticmethod
    def build(
        slot_mapping: torch.Tensor,
        query_start_loc: list[int],
        context_lens: list[int],
        block_tables: torch.Tensor,
        block_size: int,
    ) -> AttentionMetadata:
        device = slot_mapping.device
        num_seqs = len(context_lens)
        decode_seqs = [s for s in range(num_seqs) if query_start_loc[s + 1] - query_start_loc[s] == 1]
        prefills = []
        for s in range(num_seqs):
            start, end = query_start_loc[s], query_start_loc[s + 1]
            if end - start == 1 or end == start:
                continue
            ctx, qlen = context_lens[s], end - start
            if qlen > ctx:
                raise ValueError(f"sequence {s}: {qlen} new tokens but context_len {ctx}")
            positions = torch.arange(ctx - qlen, ctx, device=device)
            mask = torch.arange(ctx, device=device)[None, :] <= positions[:, None]
            prefills.append(
                PrefillChunk(slice(start, end), context_slots(block_tables[s], ctx, block_size), mask)
            )
        max_ctx = max((context_lens[s] for s in decode_seqs), default=0)
        kv_slots = torch.zeros(len(decode_seqs), max_ctx, dtype=torch.int64, device=device)
        valid = torch.zeros(len(decode_seqs), max_ctx, dtype=torch.bool, device=device)
        for i, s in enumerate(decode_seqs):
            kv_slots[i, : context_lens[s]] = context_slots(block_tables[s], context_lens[s], block_size)
            valid[i, : context_lens[s]] = True
        return AttentionMetadata(
            slot_mapping=slot_mapping,
            decode_rows=torch.tensor(
                [query_start_loc[s] for s in decode_seqs], dtype=torch.int64, device=device
            ),
            decode_kv_slots=kv_slots,
            decode_mask=valid[:, None, None, :],
            prefills=tuple(prefills),
        )


def context_slots(block_table: torch.Tensor, context_len: int, block_size: int) -> torch.Tensor:
    num_blocks = -(-context_len // block_size)
    offsets = torch.arange(block_size, device=block_table.device)
    slots = block_table[:num_blocks, None] * block_size + offsets[None, :]  # [num_blocks, block_size]
    return slots.reshape(-1)[:context_len]


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Store new K/V rows ([T, kv_heads, head_dim]) at their slots; rows with slot -1 are skipped."""
    k_flat = k_cache.view(-1, *k_cache.shape[2:])  # [num_blocks * block_size, kv_heads, head_dim]
    v_flat = v_cache.view(-1, *v_cache.shape[2:])
    keep = slot_mapping >= 0
    if not bool(keep.all()):
        slot_mapping, k, v = slot_mapping[keep], k[keep], v[keep]
    k_flat.index_copy_(0, slot_mapping, k.to(k_flat.dtype))
    v_flat.index_copy_(0, slot_mapping, v.to(v_flat.dtype))


def paged_attention_reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """q: [T, heads, head_dim] -> [T, heads, head_dim]; see the module docstring for the semantics."""
    num_heads, kv_heads = q.shape[1], k_cache.shape[2]
    rep = num_heads // kv_heads
    k_flat = k_cache.view(-1, *k_cache.shape[2:])
    v_flat = v_cache.view(-1, *v_cache.shape[2:])
    out = torch.empty_like(q)
    for chunk in meta.prefills:
        qc = q[chunk.rows].transpose(0, 1)[None]  # [1, heads, qlen, head_dim]
        kc = k_flat[chunk.kv_slots].repeat_interleave(rep, dim=1).transpose(0, 1)[None]  # [1, heads, ctx, hd]
        vc = v_flat[chunk.kv_slots].repeat_interleave(rep, dim=1).transpose(0, 1)[None]
        oc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=chunk.mask, scale=scale)
        out[chunk.rows] = oc[0].transpose(0, 1)
    if meta.decode_rows.numel() > 0:
        qd = q[meta.decode_rows][:, :, None, :]  # [D, heads, 1, head_dim]
        kd = k_flat[meta.decode_kv_slots].repeat_interleave(rep, dim=2).transpose(1, 2)  # [D, heads, ctx, hd]
        vd = v_flat[meta.decode_kv_slots].repeat_interleave(rep, dim=2).transpose(1, 2)
        od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=meta.decode_mask, scale=scale)
        out[meta.decode_rows] = od[:, :, 0, :]
    return out
