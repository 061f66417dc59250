"""Score many bases on one task at once: task adapter merged into each, greedy batched generation through
multi_llama, the task's own metric (inlaid_worker.tasks.metrics). Code runs once per distinct program."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from inlaid_worker.tasks.chat import IM_END, render_prompt
from inlaid_worker.tasks.example import load_split
from inlaid_worker.tasks.metrics import build_program, score_task
from inlaid_worker.tasks.sandbox import run_python
from inlaid_worker.tasks.spec import get_task
from multi_llama import GROUP_MODULES, MultiLlama, Shared


def adapter_deltas(adapter, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{group: scaling * B A placed at the module's rows, [L, N, K]} (zeros where the adapter has none)."""
    out = {g: torch.zeros_like(w) for g, w in weights.items()}
    if adapter is None:
        return out
    for li, deltas in adapter.deltas.items():
        for path, d in deltas.items():
            g = next(g for g, paths in GROUP_MODULES.items() if path in paths)
            row = 0
            for p in GROUP_MODULES[g]:
                if p == path:
                    break
                row += _rows(p, weights, g)
            dw = d.scaling * (d.b.to(out[g]) @ d.a.to(out[g]))
            out[g][li, row : row + dw.shape[0]] += dw
    return out


def _rows(path: str, weights: dict[str, torch.Tensor], group: str) -> int:
    """Rows of `path` inside its fused group (q: n_heads * hd, k/v: n_kv * hd; gate/up: half each)."""
    n = weights[group].shape[1]
    if group == "gate_up":
        return n // 2
    if group == "qkv":
        d = weights["o"].shape[1]
        return d if path.endswith("q_proj") else (n - d) // 2
    return n


def chunks(n_models: int, n_ex: int, seq: int, budget_tokens: int) -> tuple[int, int]:
    """(models per chunk, examples per chunk) with models * examples * seq <= budget_tokens."""
    per_model = n_ex * seq
    if per_model <= budget_tokens:
        return max(1, min(n_models, budget_tokens // per_model)), n_ex
    return 1, max(1, budget_tokens // seq)


@torch.no_grad()
def generate_all(
    shared: Shared, bases: list[dict[str, torch.Tensor]], delta: dict[str, torch.Tensor], tok, task: str,
    limit: int | None, device, budget_tokens: int = 800_000, tasks_dir: Path | None = None,
) -> list[list[str]]:
    """Completions [model][example] of the task's test prompts for each base with `delta` added
    (test split from `tasks_dir`, default assets/tasks)."""
    spec = get_task(task)
    examples = load_split(task, "test", tasks_dir)[:limit]
    enc = [tok(render_prompt(e.prompt), add_special_tokens=False)["input_ids"] for e in examples]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    stop = tok.convert_tokens_to_ids(IM_END)
    width = max(len(e) for e in enc)
    per_m, per_b = chunks(len(bases), len(enc), width + spec.max_new_tokens, budget_tokens)
    preds: list[list[str]] = [[""] * len(enc) for _ in bases]
    for e0 in range(0, len(order), per_b):
        idx = order[e0 : e0 + per_b]
        w = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), w), stop, dtype=torch.long)
        mask = torch.zeros(len(idx), w, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, w - len(enc[i]) :] = torch.tensor(enc[i])
            mask[r, w - len(enc[i]) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        for m0 in range(0, len(bases), per_m):
            part = bases[m0 : m0 + per_m]
            weights = {g: torch.stack([b[g] for b in part]) + delta[g][None] for g in delta}
            out = MultiLlama(shared, weights).generate(ids, mask, spec.max_new_tokens, stop).cpu()
            del weights
            for j in range(len(part)):
                for r, i in enumerate(idx):
                    row = out[j, r].tolist()
                    row = row[: row.index(stop)] if stop in row else row
                    preds[m0 + j][i] = tok.decode(row, skip_special_tokens=True).strip()
    return preds


def score_all(
    task: str, preds: list[list[str]], limit: int | None, workers: int = 16, tasks_dir: Path | None = None,
    first: int | None = None,
) -> list[float]:
    """Headline metric of each model's completions; programs run once each, `workers` at a time.
    first: score only the first `first` examples (the shipped test split inside an enlarged one)."""
    spec = get_task(task)
    examples = load_split(task, "test", tasks_dir)[:limit][:first]
    preds = [p[: len(examples)] for p in preds]
    refs, metas = [e.refs for e in examples], [e.meta for e in examples]
    if spec.kind != "code":
        return [score_task(spec.kind, p, refs, metas)[spec.metric] for p in preds]
    progs = [
        [build_program(m["code_prompt"], c, m["test"], m["entry_point"]) for c, m in zip(p, metas)] for p in preds
    ]
    unique = sorted({x for p in progs for x in p})
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = dict(zip(unique, pool.map(lambda x: run_python(x, 5.0).passed, unique)))
    print(f"[{task}] ran {len(unique)} distinct programs in {time.time() - t0:.1f}s", flush=True)
    return [100.0 * sum(passed[x] for x in p) / len(p) for p in progs]
