"""Greedy generation with M Llama models of one architecture at once (stacked weights, batched matmuls).

The quality table scores dozens of (fake-)quantized bases, each with a task's LoRA merged, on the same
prompts. They differ only in the decoder's linear weights, so one forward runs all of them: hidden
states [M, T, D] against fused weights [M, N, K] (`torch.bmm`), with the shared embedding (tied LM head),
norms and rotary tables. Left padding, position ids = cumsum(mask) - 1 and greedy stop at <|im_end|> as in
Hugging Face `generate` (inlaid_worker.tasks.generate); a test checks tokens against it.

Weights per model: {"qkv": [L, Nq+2Nkv, D], "o": [L, D, D], "gate_up": [L, 2I, D], "down": [L, D, I]}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GROUP_MODULES = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o": ("self_attn.o_proj",),
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": ("mlp.down_proj",),
}


@dataclass(frozen=True)
class Shared:
    """What all models share: embedding [V, D] (tied head), norms, rotary inverse frequencies, shapes."""

    embed: torch.Tensor
    ln1: torch.Tensor  # [L, D]
    ln2: torch.Tensor  # [L, D]
    norm: torch.Tensor  # [D]
    inv_freq: torch.Tensor  # [hd / 2]
    n_heads: int
    n_kv: int
    head_dim: int
    eps: float


def from_hf(model) -> tuple[Shared, dict[str, torch.Tensor]]:
    """Shared parts and the fused fp32 linear weights of a Hugging Face Llama (tied embeddings only)."""
    cfg = model.config
    if not cfg.tie_word_embeddings:
        raise ValueError("multi_llama expects tied embeddings")
    layers = model.model.layers
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    rope_type = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"rope type {rope_type!r} not supported")
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    shared = Shared(
        embed=model.model.embed_tokens.weight.detach().float(),
        ln1=torch.stack([lay.input_layernorm.weight.detach().float() for lay in layers]),
        ln2=torch.stack([lay.post_attention_layernorm.weight.detach().float() for lay in layers]),
        norm=model.model.norm.weight.detach().float(),
        inv_freq=inv_freq,
        n_heads=cfg.num_attention_heads,
        n_kv=cfg.num_key_value_heads,
        head_dim=hd,
        eps=cfg.rms_norm_eps,
    )
    weights = {
        g: torch.stack(
            [torch.cat([lay.get_submodule(p).weight.detach().float() for p in paths]) for lay in layers]
        )
        for g, paths in GROUP_MODULES.items()
    }
    return shared, weights


def shared_to(s: Shared, device: torch.device | str) -> Shared:
    return Shared(
        s.embed.to(device), s.ln1.to(device), s.ln2.to(device), s.norm.to(device), s.inv_freq.to(device),
        s.n_heads, s.n_kv, s.head_dim, s.eps,
    )


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class MultiLlama:
    """M models: `weights[g]` [M, L, N, K] on the device; `shared` on the same device."""

    def __init__(self, shared: Shared, weights: dict[str, torch.Tensor]):
        self.s = shared
        self.w = weights
        self.m = weights["qkv"].shape[0]
        self.n_layers = weights["qkv"].shape[1]

    def _cos_sin(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = pos[..., None].float() * self.s.inv_freq  # [B, S, hd/2]
        emb = torch.cat([f, f], dim=-1)
        return emb.cos()[:, :, None, :], emb.sin()[:, :, None, :]  # [B, S, 1, hd]

    def _layer(self, li: int, x: torch.Tensor, cos, sin, attend) -> torch.Tensor:
        """x [M, B, S, D]; `attend(li, q, k, v)` -> [M, B, S, H * hd]."""
        s = self.s
        m, b, sl, d = x.shape
        h = _rms(x, s.ln1[li], s.eps).view(m, b * sl, d)
        qkv = torch.bmm(h, self.w["qkv"][:, li].transpose(1, 2)).view(m, b, sl, -1)
        nq, nk = s.n_heads * s.head_dim, s.n_kv * s.head_dim
        q = _rope(qkv[..., :nq].reshape(m, b, sl, s.n_heads, s.head_dim), cos, sin)
        k = _rope(qkv[..., nq : nq + nk].reshape(m, b, sl, s.n_kv, s.head_dim), cos, sin)
        v = qkv[..., nq + nk :].reshape(m, b, sl, s.n_kv, s.head_dim)
        att = attend(li, q, k, v).reshape(m, b * sl, nq)
        x = x + torch.bmm(att, self.w["o"][:, li].transpose(1, 2)).view(m, b, sl, d)
        h = _rms(x, s.ln2[li], s.eps).view(m, b * sl, d)
        gu = torch.bmm(h, self.w["gate_up"][:, li].transpose(1, 2))
        inter = gu.shape[-1] // 2
        act = F.silu(gu[..., :inter]) * gu[..., inter:]
        return x + torch.bmm(act, self.w["down"][:, li].transpose(1, 2)).view(m, b, sl, d)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, mask: torch.Tensor, max_new: int, stop: int) -> torch.Tensor:
        """Greedy tokens [M, B, max_new] (stop-filled after a model's row emits `stop`) for left-padded
        prompts ids/mask [B, S] shared by all models."""
        s, m = self.s, self.m
        b, sl = ids.shape
        dev = ids.device
        total = sl + max_new
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, S]
        kc = torch.zeros(self.n_layers, m * b, s.n_kv, total, s.head_dim, device=dev)
        vc = torch.zeros_like(kc)
        valid = torch.zeros(b, total, dtype=torch.bool, device=dev)
        valid[:, :sl] = mask.bool()
        causal = torch.ones(sl, sl, dtype=torch.bool, device=dev).tril()
        # pad queries see themselves only (their outputs are never used), real ones their real past
        pmask = (causal[None] & valid[:, None, :sl]) | torch.eye(sl, dtype=torch.bool, device=dev)[None]
        pmask = pmask[None].expand(m, b, sl, sl).reshape(m * b, 1, sl, sl)
        rep = s.n_heads // s.n_kv

        def prefill_attend(li, q, k, v):
            kc[li, :, :, :sl] = k.reshape(m * b, sl, s.n_kv, s.head_dim).transpose(1, 2)
            vc[li, :, :, :sl] = v.reshape(m * b, sl, s.n_kv, s.head_dim).transpose(1, 2)
            qh = q.reshape(m * b, sl, s.n_heads, s.head_dim).transpose(1, 2)
            kh = kc[li, :, :, :sl].repeat_interleave(rep, dim=1)
            vh = vc[li, :, :, :sl].repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=pmask)
            return o.transpose(1, 2).reshape(m, b, sl, -1)

        cos, sin = self._cos_sin(pos)
        x = s.embed[ids][None].expand(m, b, sl, -1).contiguous()
        for li in range(self.n_layers):
            x = self._layer(li, x, cos, sin, prefill_attend)
        out = torch.full((m, b, max_new), stop, dtype=torch.long, device=dev)
        done = torch.zeros(m, b, dtype=torch.bool, device=dev)
        nxt = self._next(x[:, :, -1])
        cur = pos[:, -1]  # [B]
        scale = s.head_dim**-0.5
        for step in range(max_new):
            nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
            out[:, :, step] = nxt
            done |= nxt == stop
            if step == max_new - 1 or bool(done.all()):
                break
            t = sl + step
            valid[:, t] = True
            cur = cur + 1
            cos, sin = self._cos_sin(cur[:, None])
            amask = valid[:, : t + 1][None].expand(m, b, t + 1).reshape(m * b, 1, 1, t + 1)

            def decode_attend(li, q, k, v, t=t, amask=amask):
                kc[li, :, :, t] = k.reshape(m * b, s.n_kv, s.head_dim)
                vc[li, :, :, t] = v.reshape(m * b, s.n_kv, s.head_dim)
                qg = q.reshape(m * b, s.n_kv, rep, s.head_dim)
                sc = torch.matmul(qg, kc[li, :, :, : t + 1].transpose(-1, -2)) * scale  # [MB, kv, rep, t+1]
                sc = sc.masked_fill(~amask, float("-inf")).softmax(-1)
                return torch.matmul(sc, vc[li, :, :, : t + 1]).reshape(m, b, 1, -1)

            x = s.embed[nxt][:, :, None, :]
            for li in range(self.n_layers):
                x = self._layer(li, x, cos, sin, decode_attend)
            nxt = self._next(x[:, :, -1])
        return out

    def _next(self, h: torch.Tensor) -> torch.Tensor:
        """Greedy token [M, B] from last hidden states [M, B, D]."""
        h = _rms(h, self.s.norm, self.s.eps)
        return (h @ self.s.embed.t()).argmax(dim=-1)
