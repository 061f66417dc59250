"""Serving a GPTQ checkpoint: the runner's fused linears as packed weights run by `quant_matmul`, or dequantized.

`QuantMatrix` stands where `LlamaWeights` holds a dense [N, K] matrix (qkv, o, gate_up, down) and is applied
by `model.linear.linear`. Projections of one fused matrix are merged into one GPTQ weight along N when they
share g_idx (always, unless act-order gave them different orders); otherwise each part runs on its own and
the outputs are concatenated. The kernels take fp16/bf16 activations: other dtypes are cast around the call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from inlaid_worker.kernels.gptq_packing import GPTQWeight, pack_bitstream, prepare_gptq_weight, unpack_bitstream
from inlaid_worker.kernels.quant_matmul import quant_matmul
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.weights import LayerWeights, LlamaWeights, build_weights
from inlaid_worker.quant.checkpoint import read_checkpoint, read_quantization_config
from inlaid_worker.quant.pack import PackedLinear, dequantize_packed

FUSED = {"qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "o": ("self_attn.o_proj",),
         "gate_up": ("mlp.gate_proj", "mlp.up_proj"), "down": ("mlp.down_proj",)}  # fmt: skip


@dataclass(frozen=True)
class QuantMatrix:
    parts: tuple[GPTQWeight, ...]  # consecutive output column ranges

    @property
    def shape(self) -> tuple[int, int]:  # (N, K) like the dense matrix it replaces
        return sum(p.out_features for p in self.parts), self.parts[0].in_features

    def nbytes(self) -> int:
        tensors = [t for p in self.parts for t in (p.qweight, p.qzeros, p.scales, p.perm) if t is not None]
        return sum(t.nbytes for t in tensors)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        xq = x if x.dtype in (torch.float16, torch.bfloat16) else x.to(torch.float16)
        ys = [quant_matmul(xq, p) for p in self.parts]
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
        return y.to(x.dtype)


def is_gptq_checkpoint(model_dir: str | Path) -> bool:
    path = Path(model_dir) / "config.json"
    qc = json.loads(path.read_text()).get("quantization_config") if path.is_file() else None
    return isinstance(qc, dict) and qc.get("quant_method") == "gptq"


def _merge(parts: Sequence[PackedLinear]) -> PackedLinear:
    """One PackedLinear for projections side by side along N (same K, bits, format and g_idx)."""
    if len(parts) == 1:
        return parts[0]
    bits = parts[0].bits
    zeros = [unpack_bitstream(p.qzeros, bits, p.out_features, dim=1) for p in parts]
    return PackedLinear(
        qweight=torch.cat([p.qweight for p in parts], dim=1),
        qzeros=pack_bitstream(torch.cat(zeros, dim=1), bits, dim=1),
        scales=torch.cat([p.scales for p in parts], dim=1),
        g_idx=parts[0].g_idx,
        bits=bits,
        checkpoint_format=parts[0].checkpoint_format,
    )


def quant_matrix(
    parts: Sequence[PackedLinear], group_size: int, sym: bool, device: torch.device | str
) -> QuantMatrix:
    """Kernel-ready fused matrix from the projections' packed weights (in output order)."""
    groups: list[list[PackedLinear]] = []
    for p in parts:
        prev = groups[-1][-1] if groups else None
        if prev is not None and torch.equal(prev.g_idx, p.g_idx) and prev.bits == p.bits:
            groups[-1].append(p)
        else:
            groups.append([p])
    out = []
    for group in groups:
        m = _merge(group)
        out.append(
            prepare_gptq_weight(
                m.qweight.to(device), m.qzeros.to(device), m.scales.to(device), m.g_idx.to(device),
                bits=m.bits, group_size=group_size, sym=sym, checkpoint_format=m.checkpoint_format,
            )  # fmt: skip
        )
    return QuantMatrix(tuple(out))


def load_gptq_weights(
    ckpt_dir: str | Path, config: ModelConfig, device: torch.device | str, dtype: torch.dtype, packed: bool
) -> LlamaWeights:
    """LlamaWeights of a GPTQ checkpoint: linears as QuantMatrix (packed=True) or dequantized to `dtype`."""
    qc = read_quantization_config(ckpt_dir)
    linears, other = read_checkpoint(ckpt_dir)
    if any(name.endswith(".bias") for name in other if name.rsplit(".", 1)[0] in linears):
        raise ValueError("GPTQ linears with bias are not served (Llama has none)")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in other.items()}
    if not packed:
        for prefix, p in linears.items():
            tensors[f"{prefix}.weight"] = dequantize_packed(p)
        return build_weights(tensors, config, device, dtype)
    group_size, sym = int(qc["group_size"]), bool(qc.get("sym", True))
    for prefix, p in linears.items():  # meta placeholders: build_weights checks every name and shape, for free
        tensors[f"{prefix}.weight"] = torch.empty(p.out_features, p.in_features, device="meta")
    build_weights(tensors, config, "meta", dtype)

    def get(name: str) -> torch.Tensor:
        return tensors[name].to(device, dtype)

    def fused(i: int, name: str) -> QuantMatrix:
        missing = [p for p in FUSED[name] if f"model.layers.{i}.{p}" not in linears]
        if missing:
            raise ValueError(f"layer {i}: {missing} are not quantized; partly quantized models are not served")
        return quant_matrix([linears[f"model.layers.{i}.{p}"] for p in FUSED[name]], group_size, sym, device)

    layers = tuple(
        LayerWeights(
            input_norm=get(f"model.layers.{i}.input_layernorm.weight"),
            qkv=fused(i, "qkv"),  # type: ignore[arg-type]  # QuantMatrix stands in for the dense matrix
            o=fused(i, "o"),  # type: ignore[arg-type]
            post_norm=get(f"model.layers.{i}.post_attention_layernorm.weight"),
            gate_up=fused(i, "gate_up"),  # type: ignore[arg-type]
            down=fused(i, "down"),  # type: ignore[arg-type]
        )
        for i in range(config.num_layers)
    )
    embed = get("model.embed_tokens.weight")
    lm_head = embed if config.tie_word_embeddings else get("lm_head.weight")
    return LlamaWeights(embed, layers, get("model.norm.weight"), lm_head)
