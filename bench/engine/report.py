"""Markdown for the decode benchmark's rows (pure: rows in, text out), including the issue's goals."""

from __future__ import annotations


def _f(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _find(rows: list[dict], **want: object) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in want.items())), None)


def decode_table(rows: list[dict]) -> list[str]:
    out = ["| weights | backend | targets | rank | batch | adapters | step ms | roofline ms | x roofline | "
           "vs base step | tokens/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in (r for r in rows if r["kind"] == "decode"):
        base = _find(rows, kind="decode", quant=r["quant"], batch=r["batch"], distinct=0)
        vs = r["step_ms"] / base["step_ms"] if base else None
        out.append(f"| {r['quant']} | {r['backend']} | {r['targets']} | {r['rank']} | {r['batch']} | {r['distinct']} "
                   f"| {_f(r['step_ms'])} | {_f(r['roofline_ms'], 3)} | {_f(r['step_ms'] / r['roofline_ms'], 1)} "
                   f"| {_f(vs)} | {r['tokens_per_s']:.0f} |")  # fmt: skip
    return out


def prefill_table(rows: list[dict]) -> list[str]:
    out = ["| system | weights | adapters (rank) | tokens | tokens/s |", "|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "prefill":
            out.append(f"| engine | {r['quant']} | {r['distinct']} ({r['rank']}) | {r['tokens']} | {r['tokens_per_s']:.0f} |")
        elif r["kind"] == "peft":
            out.append(f"| transformers+PEFT | fp16 | {r['distinct']} ({r['rank']}) | {r['batch'] * r['prompt']} "
                       f"| {r['prefill_tokens_per_s']:.0f} |")  # fmt: skip
    return out


def peft_table(rows: list[dict]) -> list[str]:
    out = ["| batch | adapters (rank 16, q/k/v/o) | PEFT step ms | PEFT tokens/s | engine int4 tokens/s | "
           "engine fp16 tokens/s | int4 speedup |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in (r for r in rows if r["kind"] == "peft"):
        want = dict(kind="decode", batch=r["batch"], distinct=r["distinct"])
        if r["distinct"]:
            want.update(rank=16, targets="qkvo")
        e4, e16 = _find(rows, quant="int4", **want), _find(rows, quant="fp16", **want)
        speed = e4["tokens_per_s"] / r["tokens_per_s"] if e4 else None
        out.append(f"| {r['batch']} | {r['distinct']} | {_f(r['step_ms'])} | {r['tokens_per_s']:.0f} "
                   f"| {_f(e4 and e4['tokens_per_s'], 0)} | {_f(e16 and e16['tokens_per_s'], 0)} | {_f(speed, 1) + 'x' if speed else 'n/a'} |")  # fmt: skip
    return out


def goals(rows: list[dict]) -> list[str]:
    """The issue's decode goals (Llama-2-7B shape, int4 g128), each met / not met / not measured."""
    out = []
    b1 = _find(rows, kind="decode", quant="int4", batch=1, distinct=0)
    if b1:
        ratio = b1["step_ms"] / b1["roofline_ms"]
        out.append(f"- decode at batch 1: {ratio:.2f}x the roofline (goal <= 1.5x): {'met' if ratio <= 1.5 else 'NOT met'}")
    lo = _find(rows, kind="decode", quant="int4", batch=32, distinct=32, rank=16, targets="qkvo")
    base = _find(rows, kind="decode", quant="int4", batch=32, distinct=0)
    if lo and base:
        ratio = lo["step_ms"] / base["step_ms"]
        out.append(f"- batch 32, 32 rank-16 q/k/v/o adapters: {ratio:.2f}x the base-only step (goal <= 1.25x): "
                   f"{'met' if ratio <= 1.25 else 'NOT met'}")  # fmt: skip
    peft = _find(rows, kind="peft", batch=32, distinct=8)
    eng = _find(rows, kind="decode", quant="int4", batch=32, distinct=8, rank=16, targets="qkvo")
    if peft and eng:
        ratio = eng["tokens_per_s"] / peft["tokens_per_s"]
        out.append(f"- batch 32, 8 adapters: {ratio:.1f}x transformers+PEFT tokens/s (goal >= 25x): "
                   f"{'met' if ratio >= 25 else 'NOT met'}")  # fmt: skip
    return out or ["- (no goal point measured in this run)"]


def cost_table(cost: list[dict]) -> list[str]:
    """Decode step ms by batch (rows) and distinct rank-16 adapters (columns), per context; then the rest."""
    if not cost:
        return ["(not measured in this run)"]
    out = []
    decode = [p for p in cost if p["prefill_tokens"] == 0]
    distinct = sorted({p["distinct_adapters"] for p in decode})
    for ctx in sorted({p["kv_tokens"] // max(1, p["decode_seqs"]) for p in decode}):
        out += [f"Decode, context {ctx} (step ms; columns: distinct adapters)", "",
                "| batch | " + " | ".join(str(d) for d in distinct) + " |", "|---" * (len(distinct) + 1) + "|"]  # fmt: skip
        for b in sorted({p["decode_seqs"] for p in decode}):
            cells = []
            for d in distinct:
                hit = [p for p in decode if p["decode_seqs"] == b and p["distinct_adapters"] == d
                       and p["kv_tokens"] == b * ctx]  # fmt: skip
                cells.append(f"{hit[0]['step_s'] * 1e3:.2f}" if hit else "")
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["| prefill tokens | decode seqs | adapters | KV tokens | step ms | prefill tokens/s |", "|---|---|---|---|---|---|"]
    for p in cost:
        if p["prefill_tokens"]:
            out.append(f"| {p['prefill_tokens']} | {p['decode_seqs']} | {p['distinct_adapters']} | {p['kv_tokens']} "
                       f"| {p['step_s'] * 1e3:.2f} | {p['prefill_tokens'] / p['step_s']:.0f} |")  # fmt: skip
    return out


def to_markdown(meta: dict, rows: list[dict], cost: list[dict] | None = None) -> str:
    head = [f"# Engine decode benchmark {meta['date']}", "", f"- command: `{meta['command']}`",
            f"- device: {meta['device']}; torch {meta['torch']}; dtype {meta['dtype']}"
            + ("; Triton INTERPRETED (functional check only, times meaningless)" if meta.get("interpreted") else ""),
            f"- shape: {meta['shape']}; decode context {meta['context']} tokens per sequence",
            f"- measured copy bandwidth {meta['copy_GBps']:.0f} GB/s; roofline = bytes of weights (packed for "
            "int4) + active adapters + KV cache read per step / copy bandwidth",
            "- step time = median wall time of ModelRunner.execute (CPU work and the logits' copy to the host "
            "included; " + ("decode steps replay CUDA graphs)" if meta.get("cuda_graphs") else "no CUDA graphs)"),
            ""]  # fmt: skip
    if meta.get("wall_s") is not None:
        head.insert(6, f"- wall time {meta['wall_s']:.0f} s")
    return "\n".join(head + ["## Goals", *goals(rows), "", "## Decode steps", *decode_table(rows), "",
                             "## Prefill", *prefill_table(rows), "", "## vs transformers + PEFT (decode)",
                             *peft_table(rows), "", "## Cost points (scheduling simulator)",
                             *cost_table(cost or []), ""])  # fmt: skip
