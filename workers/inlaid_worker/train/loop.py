"""Train one LoRA adapter with PEFT and save it (adapter_config.json + fp16 adapter_model.safetensors)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..tasks.example import Example
from .data import collate, encode
from .recipe import Recipe

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def load_base(model_dir: Path, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    return model, tok


def lora_model(base: Any, recipe: Recipe) -> Any:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=list(recipe.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, cfg)


def _lr_at(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_adapter(
    model: Any, tokenizer: Any, train: list[Example], recipe: Recipe, seed: int, log_every: int = 10
) -> dict[str, Any]:
    """Train in place (model is a PeftModel); returns the loss curve and timing."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, ex, recipe.max_len) for ex in train]
    steps_per_epoch = math.ceil(len(encoded) / recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses: list[float] = []
    step, t0 = 0, time.time()
    use_bf16 = device.type == "cuda"
    for _epoch in range(recipe.epochs):
        perm = torch.randperm(len(encoded), generator=gen).tolist()
        for b in range(steps_per_epoch):
            batch = collate(
                [encoded[i] for i in perm[b * recipe.batch_size : (b + 1) * recipe.batch_size]],
                tokenizer.pad_token_id,
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, recipe.lr)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach().item())
            if log_every and step % log_every == 0:
                print(f"  step {step}/{total} loss {losses[-1]:.4f}", flush=True)
            step += 1
    model.eval()
    return {
        "steps": total,
        "first_loss": losses[0],
        "last_loss": sum(losses[-5:]) / len(losses[-5:]),
        "train_seconds": round(time.time() - t0, 2),
    }


def save_adapter(model: Any, out: Path, info: dict[str, Any]) -> None:
    """Write the PEFT adapter with fp16 tensors and the base model named by its hub id."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = BASE_MODEL_ID
    model.save_pretrained(out, safe_serialization=True)
    path = out / "adapter_model.safetensors"
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    (out / "train_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    readme = out / "README.md"
    if readme.exists():
        readme.unlink()  # PEFT's generated model card is boilerplate
