"""Inputs of the GPU onboarding benchmark, written to disk without any download: a Llama-shaped Hugging Face
directory with random fp16 weights (its first `layers` decoder layers), a word-level tokenizer of the
model's vocabulary (token "w<i>" = id i), PEFT LoRA adapters with random A and B, and calibration JSONL files
of random words.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from random_model import Shape, write_config  # noqa: E402

PROJ = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
        "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}  # fmt: skip


def word_tokenizer(vocab: int) -> Any:
    """A transformers fast tokenizer with exactly `vocab` ids: whitespace-separated words "w<i>"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1", eos_token="w2")


def linear_shapes(shape: Shape) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each projection (head_dim = hidden / heads)."""
    h, i = shape.hidden, shape.intermediate
    kv = shape.kv_heads * (h // shape.heads)
    return {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h),
            "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}  # fmt: skip


def write_fp_model(shape: Shape, layers: int, out: Path, device: torch.device, seed: int = 0) -> Path:
    """config.json, model.safetensors (fp16, std 0.02 linears, unit norms) and the tokenizer at `out`."""
    cfg = Shape(shape.hidden, shape.intermediate, layers, shape.heads, shape.kv_heads, shape.vocab)
    write_config(cfg, out)
    gen = torch.Generator(device=device).manual_seed(seed)

    def rnd(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=gen, device=device) * 0.02).half().cpu()

    ones = torch.ones(shape.hidden, dtype=torch.float16)
    tensors = {"model.embed_tokens.weight": rnd(shape.vocab, shape.hidden), "model.norm.weight": ones,
               "lm_head.weight": rnd(shape.vocab, shape.hidden)}  # fmt: skip
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = ones.clone()
        tensors[p + "post_attention_layernorm.weight"] = ones.clone()
        for name, (n, k) in linear_shapes(shape).items():
            tensors[f"{p}{PROJ[name]}.{name}.weight"] = rnd(n, k)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    word_tokenizer(shape.vocab).save_pretrained(out)
    return out


def write_adapter(out: Path, base: Path, shape: Shape, layers: int, rank: int, targets: tuple[str, ...],
                  seed: int) -> Path:  # fmt: skip
    """A PEFT LoRA adapter directory (safetensors) for the first `layers` layers of `shape`."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        for name in targets:
            n, k = linear_shapes(shape)[name]
            key = f"base_model.model.model.layers.{i}.{PROJ[name]}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, k, generator=gen) / k**0.5
            tensors[f"{key}.lora_B.weight"] = 0.01 * torch.randn(n, rank, generator=gen)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(targets),
           "bias": "none", "base_model_name_or_path": str(base), "task_type": "CAUSAL_LM"}  # fmt: skip
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def write_calib(path: Path, vocab: int, records: int, words: int, seed: int) -> Path:
    """`records` lines of {"text": `words` random words} (word i = token id i)."""
    rng = random.Random(seed)
    lines = [{"text": " ".join(f"w{rng.randrange(3, vocab)}" for _ in range(words))} for _ in range(records)]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    return path


def replicate_checkpoint(src: Path, out: Path, layers: int) -> Path:
    """A `layers`-layer copy of an MLGPTQ checkpoint of d < layers layers (with its Hessian store): layer i is
    layer i % d, packed weights copied, stored Hessians (task files and running aggregate) hard-linked. A set-up
    shortcut for the 7B shape: quantizing all 32 layers from scratch would take the device call's whole budget,
    and an onboarding reads these files exactly as it reads real ones (the values do not change its work)."""
    from safetensors import safe_open

    out.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.safetensors"):
            shutil.copy2(f, out / f.name)
    cfg = json.loads((src / "config.json").read_text())
    d = int(cfg["num_hidden_layers"])
    cfg["num_hidden_layers"] = layers
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    files = sorted(src.glob("model*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name)
                if not name.startswith("model.layers."):
                    tensors[name] = t
                    continue
                i, rest = name.removeprefix("model.layers.").split(".", 1)
                for j in range(int(i), layers, d):
                    tensors[f"model.layers.{j}.{rest}"] = t if j == int(i) else t.clone()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    hs, ho = src / "hessians", out / "hessians"
    index = json.loads((hs / "index.json").read_text())
    index["num_layers"] = layers
    ho.mkdir()
    (ho / "index.json").write_text(json.dumps(index, indent=2))
    for sub in [hs / "running"] + sorted((hs / "tasks").iterdir()):
        dst = ho / sub.relative_to(hs)
        dst.mkdir(parents=True)
        for j in range(layers):
            os.link(sub / f"layer-{j % d:05d}.safetensors", dst / f"layer-{j:05d}.safetensors")
    return out
