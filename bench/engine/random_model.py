"""Random-weight Llama runners for the decode benchmark (speed does not depend on the values).

Builds LlamaWeights directly on the device (fp16 dense, or 4-/3-bit g128 packed QuantMatrix in the standard GPTQ
layout: qweight [K*bits/32, N], qzeros [K/128, ceil(N*bits/32)], fp16 scales [K/128, N]), random LoRA
adapters sharing one set of tensors per (rank, targets) (their pools still hold one copy per slot), and the
byte counts the roofline needs.

Every layer linear keeps its input's scale (LINEAR_GAIN: output rms ~ input rms for zero-mean inputs) and has
zero-mean weights, so a random 7B / 13B model stays finite in fp16 through all its layers. Before 2026-11-30 the
packed weights had random zero points (mean code - zero = -1, up to +-8 per group) and scales of 0.001-0.011:
each linear multiplied its input's mean by ~sqrt(K) and its rms by 3-5, and the 7B shape's first down
projection already reached 7e4 (fp32 on the CPU: bench/engine/activation_peaks.py), so every logit of the fp16
engine was inf/NaN. Kernels, shapes and bytes are as before: only the values of the zeros and scales changed
(codes are still random words: every bit pattern is valid).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from inlaid_worker.kernels.gptq_packing import GPTQWeight, pack_bitstream
from inlaid_worker.lora.adapter import LoraAdapter
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.quant_weights import QuantMatrix
from inlaid_worker.model.runner import ModelRunner
from inlaid_worker.model.weights import LayerWeights, LlamaWeights
from llama_shapes import LLAMA2_7B, SHAPES, TINY, Shape  # noqa: F401  (re-exported to the benchmarks)

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL = ATTN + ("gate_proj", "up_proj", "down_proj")
TARGETS = {"qkvo": ATTN, "all": ALL}
QUANT_BITS = {"int4": 4, "int3": 3}  # --quants names of packed weights; "fp16" = dense
LINEAR_GAIN = 1.0  # each random layer linear's output rms over its input's (zero-mean inputs)
NORMS = ("ones", "random")  # random_weights' norm weights: all ones (the benchmarks'), or random_norms


def write_config(shape: Shape, out_dir: Path) -> Path:
    """A Llama config.json (no tensors): the runner reads its shape from here."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=shape.hidden,
               intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
               num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=shape.vocab,
               max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
               bos_token_id=1, eos_token_id=2, hidden_act="silu")  # fmt: skip
    (out_dir / "config.json").write_text(json.dumps(raw))
    return out_dir


def random_gptq(k: int, n: int, bits: int, device: torch.device, group: int = 128,
                gain: float = LINEAR_GAIN) -> QuantMatrix:  # fmt: skip
    """Random packed weights, asymmetric (v1 zeros: stored + 1), no act-order. Codes q are random words (every
    bit pattern is a valid code, mean 2^(b-1) - 1/2); each group's zero (stored + 1) is 2^(b-1) - 1 or 2^(b-1) at
    random, so q - z has mean 0; scales are U(0.5, 1.5) times gain / (rms(q - z) sqrt(K)), so y = x W keeps x's
    rms (times gain) and x's mean does not leak into y (module docstring)."""
    g = min(group, k)
    if (k * bits) % 32 or k % g:
        raise ValueError(f"K={k} does not pack into 32-bit words at {bits} bits with groups of {g}")
    qw = torch.randint(-(2**31), 2**31 - 1, (k * bits // 32, n), dtype=torch.int32, device=device)
    half = 2 ** (bits - 1)
    stored = torch.randint(half - 2, half, (k // g, n), device=device)  # + zero_offset 1: half - 1 or half
    qz = pack_bitstream(stored, bits, dim=1)
    code_rms = ((4**bits - 1) / 12 + 0.25) ** 0.5  # rms of q - z: q uniform over 2^b codes, z = mean -+ 1/2
    base = gain / (code_rms * k**0.5 * (13 / 12) ** 0.5)  # (13/12)^0.5: rms of U(0.5, 1.5)
    sc = ((torch.rand(k // g, n, device=device) + 0.5) * base).half()
    return QuantMatrix((GPTQWeight(qw, qz, sc, None, bits, g, False, 1, k, n),))


def random_weights(c: ModelConfig, quant: str, device: torch.device, dtype: torch.dtype, norms: str = "ones",
                   seed: int = 0) -> LlamaWeights:  # fmt: skip
    """quant: "int4" / "int3" (packed g128, run by quant_matmul) or "fp16" (dense in `dtype`). norms: "ones" (the
    benchmarks': every norm weight 1, one tensor for a layer's input and post-attention norm) or "random"
    (random_norms: distinct per layer and per norm, seeded with `seed`; the other tensors are drawn as with "ones")."""
    if quant != "fp16" and quant not in QUANT_BITS:
        raise ValueError(f"unknown quant {quant!r}: one of fp16, {', '.join(QUANT_BITS)}")
    if norms not in NORMS:
        raise ValueError(f"unknown norms {norms!r}: one of {', '.join(NORMS)}")

    h = c.hidden_size
    layers = tuple(random_layer(c, quant, device, dtype) for _ in range(c.num_layers))
    embed = (torch.randn(c.vocab_size, h, device=device, dtype=torch.float32) * 0.02).to(dtype)
    lm_head = (torch.randn(c.vocab_size, h, device=device, dtype=torch.float32) * 0.02).to(dtype)
    w = LlamaWeights(embed, layers, torch.ones(h, device=device, dtype=dtype), lm_head)
    return random_norms(w, seed) if norms == "random" else w


def random_norms(w: LlamaWeights, seed: int = 0) -> LlamaWeights:
    """w with every layer's input and post-attention norm weight its own tensor of U(0.5, 1.5) values (w's dtype and
    device), drawn from a CPU generator seeded with `seed` (the global RNG is not touched). Speed does not depend on
    them; a check of a step's logits or KV cache then sees a norm weight read in the wrong order (the "+dn2" fusion's
    pair-ordered copies), from the other norm or from another layer, which all-ones norms shared by both hide."""
    gen = torch.Generator().manual_seed(seed)
    h = w.norm.shape[0]

    def draw(like: torch.Tensor) -> torch.Tensor:
        return (torch.rand(h, generator=gen) + 0.5).to(device=like.device, dtype=like.dtype)

    layers = tuple(replace(layer, input_norm=draw(layer.input_norm), post_norm=draw(layer.post_norm), norm_pairs=None)
                   for layer in w.layers)  # fmt: skip
    return replace(w, layers=layers)


def random_layer(c: ModelConfig, quant: str, device: torch.device, dtype: torch.dtype) -> LayerWeights:
    """One layer: norms of ones, linears packed (random_gptq) or dense randn * LINEAR_GAIN / sqrt(K)."""
    if quant != "fp16" and quant not in QUANT_BITS:
        raise ValueError(f"unknown quant {quant!r}: one of fp16, {', '.join(QUANT_BITS)}")

    def mat(n: int, k: int) -> torch.Tensor | QuantMatrix:
        if quant in QUANT_BITS:
            return random_gptq(k, n, QUANT_BITS[quant], device)
        return (torch.randn(n, k, device=device, dtype=torch.float32) * (LINEAR_GAIN / k**0.5)).to(dtype)

    h, inter = c.hidden_size, c.intermediate_size
    ones = torch.ones(h, device=device, dtype=dtype)
    return LayerWeights(ones, mat(c.q_size + 2 * c.kv_size, h), mat(h, c.q_size), ones, mat(2 * inter, h),
                        mat(h, inter))  # type: ignore[arg-type]  # fmt: skip


def make_runner(
    config_dir: Path, quant: str, device: torch.device, dtype: torch.dtype, num_kv_blocks: int,
    block_size: int, max_adapters: int, backend: str, cuda_graphs: bool = True, norms: str = "ones",
) -> ModelRunner:  # fmt: skip
    """A runner on random_weights (norms: "ones" or "random", set before the runner takes the weights)."""
    from inlaid_worker.model.config import load_model_config

    weights = random_weights(load_model_config(config_dir), quant, device, dtype, norms)
    return ModelRunner(config_dir, device, dtype, num_kv_blocks, block_size, max_adapters, backend, weights,
                       cuda_graphs)  # fmt: skip


def random_adapter(c: ModelConfig, rank: int, targets: tuple[str, ...], seed: int = 0) -> LoraAdapter:
    """One adapter; its tensors are shared by every layer (the pools copy them into per-layer rows)."""
    gen = torch.Generator().manual_seed(seed)
    per_module = {}
    for m in targets:
        out_f, in_f = c.linear_shape(m)
        per_module[m] = (torch.randn(rank, in_f, generator=gen) / in_f**0.5, 0.01 * torch.randn(out_f, rank, generator=gen))
    weights = {(layer, m): per_module[m] for layer in range(c.num_layers) for m in targets}
    return LoraAdapter(rank, 2.0 * rank, 2.0, frozenset(targets), None, weights)


def weight_bytes(w: LlamaWeights, batch_rows: int) -> int:
    """Bytes a decode step must read from the weights: every layer's linears (packed: the words, zeros and
    scales as stored, so 3-bit counts K*3/32 word rows), norms, the LM head, and one embedding row per token."""
    total = w.lm_head.nbytes + w.norm.nbytes + batch_rows * w.embed[0].nbytes
    for layer in w.layers:
        total += layer.input_norm.nbytes + layer.post_norm.nbytes
        for m in (layer.qkv, layer.o, layer.gate_up, layer.down):
            total += m.nbytes() if isinstance(m, QuantMatrix) else m.nbytes
    return total


def adapter_bytes(c: ModelConfig, rank: int, targets: tuple[str, ...], element: int) -> int:
    """A and B of one adapter over all layers."""
    per_layer = sum(rank * sum(c.linear_shape(m)) for m in targets)
    return per_layer * c.num_layers * element


def kv_bytes(c: ModelConfig, tokens: int, element: int) -> int:
    """K and V of `tokens` cached tokens over all layers (what decode attention reads)."""
    return tokens * c.num_layers * 2 * c.kv_size * element
