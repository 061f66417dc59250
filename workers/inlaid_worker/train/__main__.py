"""`python -m inlaid_worker.train --task NAME [--rank R] [--epochs E] [--seed 0] --out assets/adapters/NAME`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch

from ..model.smollm2 import ensure_smollm2
from ..tasks.example import load_split
from .data import balance_by_target
from .loop import load_base, lora_model, save_adapter, train_adapter
from .recipe import get_recipe


def train_one(task: str, out: Path, seed: int, model_dir: Path, device: str, **overrides) -> dict:
    recipe = get_recipe(task, **overrides)
    torch.manual_seed(seed)
    base, tok = load_base(model_dir, device)
    model = lora_model(base, recipe)
    print(
        f"[{task}] rank {recipe.rank} targets {','.join(recipe.targets)} epochs {recipe.epochs}", flush=True
    )
    train = load_split(task, "train")
    if recipe.balance:
        train = balance_by_target(train, seed)
    stats = train_adapter(model, tok, train, recipe, seed)
    stats["n_train"] = len(train)
    info = {"task": task, "seed": seed, "recipe": asdict(recipe), **stats}
    save_adapter(model, out, info)
    return {"model": model, "tokenizer": tok, "info": info}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True)
    ap.add_argument("--rank", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, help="converted HF dir (default: ensure_smollm2())")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    result = train_one(
        args.task,
        args.out,
        args.seed,
        args.model_dir or ensure_smollm2(),
        args.device,
        rank=args.rank,
        epochs=args.epochs,
        lr=args.lr,
    )
    print(result["info"])


if __name__ == "__main__":
    main()
