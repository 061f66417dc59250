"""How large a random model's activations get: the first layers of random_model's weights, dequantized to fp32
on the CPU and run through model.llama's reference attention and MLP one layer at a time (one layer's dense
weights in memory at once), recording each linear's output peak |value| and the residual stream's.

fp16 holds up to 65504; a random model whose peaks approach that produces inf/NaN logits in the fp16 engine.
    PYTHONPATH=workers python3 bench/engine/activation_peaks.py --shape 7b --layers 4 --tokens 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inlaid_worker.kernels.gptq_packing import GPTQWeight, unpack_bitstream  # noqa: E402
from inlaid_worker.model.attention import AttentionMetadata  # noqa: E402
from inlaid_worker.model.config import ModelConfig, load_model_config  # noqa: E402
from inlaid_worker.model.llama import _attention, _mlp, rms_norm  # noqa: E402
from inlaid_worker.model.quant_weights import QuantMatrix  # noqa: E402
from inlaid_worker.model.rope import cos_sin, inv_frequencies  # noqa: E402
from inlaid_worker.model.weights import LayerWeights  # noqa: E402
from llama_shapes import SHAPES  # noqa: E402

BLOCK = 16


def dequantize_part(p: GPTQWeight, cols: int = 2048) -> torch.Tensor:
    """fp32 [N, K] of one packed part without act-order (N in column chunks: bounded memory)."""
    k, n, g = p.in_features, p.out_features, p.group_size
    z = unpack_bitstream(p.qzeros, p.bits, n, dim=1).float() + p.zero_offset  # [K/g, N]
    out = torch.empty(n, k)
    gi = torch.arange(k) // g
    for n0 in range(0, n, cols):
        n1 = min(n, n0 + cols)
        q = unpack_bitstream(p.qweight[:, n0:n1], p.bits, k, dim=0).float()  # [K, cols]
        out[n0:n1] = ((q - z[gi, n0:n1]) * p.scales[gi, n0:n1].float()).T
    return out


def dense(m: torch.Tensor | QuantMatrix) -> torch.Tensor:
    if isinstance(m, QuantMatrix):
        assert all(p.perm is None for p in m.parts)
        return torch.cat([dequantize_part(p) for p in m.parts])
    return m.float()


class _Probe:
    """A dense fp32 linear standing in for a fused matrix (llama.linear calls it) that records its output peak."""

    def __init__(self, w: torch.Tensor, name: str, peaks: dict[str, float]) -> None:
        self.w, self.name, self.peaks = w, name, peaks

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.w)
        self.peaks[self.name] = max(self.peaks.get(self.name, 0.0), float(y.abs().max()))
        return y


def activation_peaks(c: ModelConfig, make_layer, layers: int, tokens: int = 64, seed: int = 0) -> list[dict]:  # type: ignore[no-untyped-def]
    """Per layer: peak |value| of each fused linear's output (qkv, o, gate_up, down) and of the residual stream
    after the layer ("h"), for one sequence of `tokens` prompt rows whose embeddings are randn * 0.02 (as
    random_model's). make_layer() -> LayerWeights (packed or dense) is called once per layer."""
    torch.manual_seed(seed)
    h = torch.randn(tokens, c.hidden_size) * 0.02
    blocks = -(-tokens // BLOCK)
    meta = AttentionMetadata.build(torch.arange(tokens), [0, tokens], [tokens], torch.arange(blocks)[None], BLOCK)
    rope = cos_sin(inv_frequencies(c.rope, c.head_dim), torch.arange(tokens), torch.float32)
    cache = torch.zeros(2, blocks, BLOCK, c.num_kv_heads, c.head_dim)
    out = []
    for i in range(layers):
        lw = make_layer()
        peaks: dict[str, float] = {}
        probe = lambda m, name: _Probe(dense(m), name, peaks)  # noqa: E731
        fp = LayerWeights(lw.input_norm.float(), probe(lw.qkv, "qkv"), probe(lw.o, "o"), lw.post_norm.float(),
                          probe(lw.gate_up, "gate_up"), probe(lw.down, "down"))  # type: ignore[arg-type]  # fmt: skip
        del lw
        h = h + _attention(fp, i, c, rms_norm(h, fp.input_norm, c.rms_norm_eps), rope, cache, meta, None)
        h = h + _mlp(fp, i, c, rms_norm(h, fp.post_norm, c.rms_norm_eps), None)
        peaks["h"] = float(h.abs().max())
        peaks["h_rms"] = float(h.pow(2).mean().sqrt())
        out.append(peaks)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--module", default="random_model", help="the builder module (e.g. a copy of an older one)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rm = __import__(args.module)
    with tempfile.TemporaryDirectory() as tmp:
        c = load_model_config(rm.write_config(SHAPES[args.shape], Path(tmp) / args.shape))
    layer = lambda: rm.random_layer(c, args.quant, torch.device("cpu"), torch.float32)  # noqa: E731
    for i, p in enumerate(activation_peaks(c, layer, args.layers, args.tokens)):
        print(json.dumps(dict(layer=i, **{k: float(f"{v:.4g}") for k, v in p.items()})), flush=True)


if __name__ == "__main__":
    main()
