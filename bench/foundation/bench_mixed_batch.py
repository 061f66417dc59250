"""Tokens/s of one mixed batch of 4 task adapters: the Inlaid engine vs transformers + PEFT
`generate(adapter_names=...)`, same model, same prompts, same machine, same run.

Usage: .venv/bin/python bench/foundation/bench_mixed_batch.py [--batch 8] [--new-tokens 32] [--out bench/results]
Both sides decode greedily with EOS ignored, so they produce the same number of tokens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch
from inlaid_worker.engine.factory import EngineOptions, add_adapter_dir, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.model.smollm2 import ensure_smollm2

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ["asdiv", "boolq", "csqa", "nq_open"]


def prompts_for(task: str, n: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in (ROOT / "assets/tasks" / task / "test.jsonl").open()][:n]
    return [[{"role": "user", "content": r["prompt"][:600]}] for r in rows]


def run_engine(model_dir: Path, batch: list[tuple[str, list[int]]], new_tokens: int) -> float:
    engine = create_engine(model_dir, EngineOptions(kv_cache_bytes=256 << 20, max_num_batched_tokens=8192))
    for name in ADAPTERS:
        add_adapter_dir(engine, name, ROOT / "assets/adapters" / name, model_dir)
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    for i, (task, ids) in enumerate(batch):
        engine.add_request(f"r{i}", ids, params, model=task)
    produced = 0
    while engine.has_work:
        produced += sum(len(o.token_ids) for o in engine.step())
    elapsed = time.perf_counter() - start
    if produced != len(batch) * new_tokens:
        raise RuntimeError(f"engine produced {produced} tokens, expected {len(batch) * new_tokens}")
    return elapsed


def run_peft(model_dir: Path, batch: list[tuple[str, list[int]]], new_tokens: int, pad_id: int) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(model, ROOT / "assets/adapters" / ADAPTERS[0], adapter_name=ADAPTERS[0])
    for name in ADAPTERS[1:]:
        model.load_adapter(ROOT / "assets/adapters" / name, adapter_name=name)
    model.eval()
    width = max(len(ids) for _, ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, (_, ids) in enumerate(batch):  # left padding
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        mask[i, width - len(ids) :] = 1
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids, attention_mask=mask, adapter_names=[t for t, _ in batch],
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id,
        )
    elapsed = time.perf_counter() - start
    if out.shape[1] - width != new_tokens:
        raise RuntimeError(f"PEFT produced {out.shape[1] - width} tokens per row, expected {new_tokens}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = ensure_smollm2()
    engine_probe = create_engine(model_dir, EngineOptions(kv_cache_bytes=16 << 20))
    tok = engine_probe.tokenizer
    per = max(1, args.batch // len(ADAPTERS))
    batch = [(t, tok.encode_chat(m)) for t in ADAPTERS for m in prompts_for(t, per)]
    del engine_probe
    total = len(batch) * args.new_tokens
    t_engine = run_engine(model_dir, batch, args.new_tokens)
    t_peft = run_peft(model_dir, batch, args.new_tokens, pad_id=2)
    rows = {
        "engine_tok_s": total / t_engine, "peft_tok_s": total / t_peft, "speedup": t_peft / t_engine,
        "engine_s": t_engine, "peft_s": t_peft, "batch": len(batch), "new_tokens": args.new_tokens,
        "prompt_tokens_mean": sum(len(ids) for _, ids in batch) / len(batch), "adapters": ADAPTERS,
        "threads": args.threads,
    }
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    device = f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, {args.threads} thread(s)"
    cmd = " ".join(["python", *sys.argv])
    md = (
        f"# Mixed batch of 4 adapters: engine vs transformers + PEFT ({date})\n\n"
        f"- Command: `{cmd}`\n- Device: {device}\n- Model: SmolLM2-135M-Instruct fp32; adapters {', '.join(ADAPTERS)} "
        f"(shipped, trained); {len(batch)} chat prompts from the test splits (mean {rows['prompt_tokens_mean']:.0f} tokens), "
        f"{args.new_tokens} greedy tokens each, EOS ignored; wall time includes prefill.\n\n"
        "| path | seconds | tokens/s |\n|---|---|---|\n"
        f"| Inlaid engine (paged KV, per-token LoRA, torch reference) | {t_engine:.2f} | {rows['engine_tok_s']:.1f} |\n"
        f"| transformers + PEFT `generate(adapter_names=...)` | {t_peft:.2f} | {rows['peft_tok_s']:.1f} |\n\n"
        f"Engine / PEFT speed: {rows['speedup']:.2f}x\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat()
    (out / f"mixed-batch-{stamp}.md").write_text(md)
    (out / f"mixed-batch-{stamp}.json").write_text(json.dumps({**rows, "date": date, "device": device, "command": cmd}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
