"""Quantization time of a Llama-2-7B-shaped model with random weights, layer by layer, on one GPU.

    PYTHONPATH=workers python bench/quality/bench7b.py --layers 2 --seqs 128 --seq-len 2048 --out t.json

Per decoder layer (hidden 4096, intermediate 11008, 32 heads; only that layer on the GPU): calibration
forward in fp16 over `--seqs` x `--seq-len` tokens with Hessians accumulated in fp32 (TF32 off), then 4-bit
g128 GPTQ of the seven linears, (a) with fast_gptq's batched column loop (q/k/v and gate/up as one matrix
each) and (b) on the first layer also with the quantizer's own gptq_quantize per module. The outputs of
the full-precision layer feed the next one. Timing `--layers` layers and multiplying by 32 gives the
model's time (every layer has the same shapes and work); weight creation is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fast_gptq import gptq_batched  # noqa: E402

GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "gate_up": ("gate_proj", "up_proj"),
          "down": ("down_proj",)}


def _sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seqs", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--repo-gptq-layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    from inlaid_worker.quant import QuantSpec, gptq_quantize, prepare_hessian
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(a.device)
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=a.inter, num_attention_heads=a.heads,
                      num_key_value_heads=a.heads, num_hidden_layers=32, max_position_embeddings=4096)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    x = torch.randn(a.seqs, a.seq_len, a.hidden, device=dev,
                    dtype=torch.float16 if dev.type == "cuda" else torch.float32)
    pos = torch.arange(a.seq_len, device=dev)[None]
    rope = LlamaRotaryEmbedding(cfg).to(dev)
    cos, sin = rope(x[:1], pos)
    spec = QuantSpec(bits=4, group_size=128)
    rows: list[dict] = []
    for li in range(a.layers):
        with torch.device(dev):
            layer = LlamaDecoderLayer(cfg, li).to(x.dtype).eval()
        for p in layer.parameters():
            p.data.normal_(0, 0.02)
        t0 = _sync()
        sums: dict[str, torch.Tensor] = {}

        def hook(g):
            def pre(_m, args):
                xx = args[0].reshape(-1, args[0].shape[-1]).float()
                sums[g] = sums[g] + xx.t() @ xx if g in sums else xx.t() @ xx
            return pre

        first = {"qkv": layer.self_attn.q_proj, "o": layer.self_attn.o_proj, "gate_up": layer.mlp.gate_proj,
                 "down": layer.mlp.down_proj}
        hs = [m.register_forward_pre_hook(hook(g)) for g, m in first.items()]
        with torch.no_grad():
            for i in range(0, a.seqs, a.chunk):
                out = layer(x[i : i + a.chunk], position_embeddings=(cos, sin), position_ids=pos)
                x[i : i + a.chunk] = out[0] if isinstance(out, tuple) else out
        for h in hs:
            h.remove()
        n = a.seqs * a.seq_len
        hess = {g: s * (2.0 / n) for g, s in sums.items()}
        t1 = _sync()
        mods = dict(layer.self_attn.named_children()) | dict(layer.mlp.named_children())
        for g, names in GROUPS.items():
            w = torch.cat([mods[nm].weight.float() for nm in names])[None]
            gptq_batched(w, hess[g][None], 4, 128)
        t2 = _sync()
        row = {"layer": li, "calib_forward_and_hessians_s": round(t1 - t0, 3), "gptq_batched_s": round(t2 - t1, 3)}
        if li < a.repo_gptq_layers:
            for g, names in GROUPS.items():
                prep = prepare_hessian(hess[g], spec)
                for nm in names:
                    gptq_quantize(mods[nm].weight.float(), prep, spec)
            row["gptq_quantize_per_module_s"] = round(_sync() - t2, 3)
        rows.append(row)
        print(row, flush=True)
        del layer, sums, hess
    per_layer = {k: sum(r[k] for r in rows) / len(rows) for k in ("calib_forward_and_hessians_s", "gptq_batched_s")}
    repo = [r["gptq_quantize_per_module_s"] for r in rows if "gptq_quantize_per_module_s" in r]
    res = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__, "shape": "Llama-2-7B (32 layers)",
        "calibration_tokens": n, "layers_timed": rows,
        "model_estimate_s": {
            "hessians + batched GPTQ": round(32 * sum(per_layer.values()), 1),
            "hessians + per-module gptq_quantize": round(32 * (per_layer["calib_forward_and_hessians_s"]
                                                              + sum(repo) / len(repo)), 1) if repo else None,
        },
    }
    print(json.dumps(res, indent=2), flush=True)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
