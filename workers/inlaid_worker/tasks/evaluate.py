"""Score a model on a task split: render prompts, generate greedily, apply the task's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .chat import render_prompt
from .example import load_split
from .generate import generate
from .metrics import score_task
from .spec import get_task


def evaluate_task(
    model: Any,
    tokenizer: Any,
    task: str,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 64,
    tasks_dir: Path | None = None,
) -> dict[str, Any]:
    """{'metrics': {...}, 'headline': name, 'n': count, 'samples': first few (prompt, pred, refs)}."""
    spec = get_task(task)
    examples = load_split(task, split, tasks_dir)[:limit]
    prompts = [render_prompt(e.prompt) for e in examples]
    preds = generate(model, tokenizer, prompts, spec.max_new_tokens, batch_size)
    metrics = score_task(spec.kind, preds, [e.refs for e in examples], [e.meta for e in examples])
    samples = [{"id": e.id, "pred": p, "target": e.target} for e, p in list(zip(examples, preds))[:3]]
    return {"metrics": metrics, "headline": spec.metric, "n": len(examples), "samples": samples}
