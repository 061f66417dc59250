"""Markdown for the decode benchmark's rows (pure: rows in, text out), including the issue's goals."""

from __future__ import annotations


def _f(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _find(rows: list[dict], **want: object) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in want.items())), None)


def _default(rows: list[dict], meta: dict | None) -> dict:
    """Filter for the rows of the engine's default decode fusion (runs comparing several fusions)."""
    fused = meta is not None and meta.get("default_fusion") and any("fusion" in r for r in rows)
    return dict(fusion=meta["default_fusion"]) if fused else {}  # type: ignore[index]


def _shape(r: dict) -> str:
    return r.get("shape", "-")  # rows of runs before --shapes have none


def decode_table(rows: list[dict]) -> list[str]:
    out = ["| shape | weights | backend | fusion | targets | rank | batch | adapters | step ms | roofline ms | "
           "x roofline | vs base step | tokens/s |", "|---" * 13 + "|"]  # fmt: skip
    for r in (r for r in rows if r["kind"] == "decode"):
        fusion = {"fusion": r["fusion"]} if "fusion" in r else {}
        fusion.update({"pdl": r["pdl"]} if "pdl" in r else {})
        base = _find(rows, kind="decode", quant=r["quant"], batch=r["batch"], distinct=0, **fusion,
                     **({"shape": r["shape"]} if "shape" in r else {}))  # fmt: skip
        vs = r["step_ms"] / base["step_ms"] if base else None
        label = r.get("fusion", "-") + (f" pdl{r['pdl']}" if "pdl" in r else "")
        out.append(f"| {_shape(r)} | {r['quant']} | {r['backend']} | {label} | {r['targets']} | {r['rank']} "
                   f"| {r['batch']} | {r['distinct']} | {_f(r['step_ms'])} | {_f(r['roofline_ms'], 3)} "
                   f"| {_f(r['step_ms'] / r['roofline_ms'], 1)} | {_f(vs)} | {r['tokens_per_s']:.0f} |")  # fmt: skip
    return out


def fusion_table(rows: list[dict]) -> list[str]:
    """Step ms per (weights, batch, adapters) and decode fusion, and each fusion's speed-up over "none"."""
    fusions = list(dict.fromkeys(r["fusion"] for r in rows if r["kind"] == "decode" and "fusion" in r))
    if len(fusions) < 2:
        return []
    out = ["| shape | weights | batch | adapters | " + " | ".join(f"{f} ms" for f in fusions) + " | "
           + " | ".join(f"{f} vs none" for f in fusions if f != "none") + " |",
           "|---" * (4 + 2 * len(fusions) - ("none" in fusions)) + "|"]  # fmt: skip
    points = dict.fromkeys((_shape(r), r["quant"], r["batch"], r["distinct"], r["rank"], r["targets"]) for r in rows
                           if r["kind"] == "decode" and "fusion" in r)  # fmt: skip
    for shape, quant, batch, distinct, rank, targets in points:
        got = {f: _find([r for r in rows if _shape(r) == shape], kind="decode", quant=quant, batch=batch,
                        distinct=distinct, rank=rank, targets=targets, fusion=f) for f in fusions}  # fmt: skip
        ms = {f: r["step_ms"] if r else None for f, r in got.items()}
        none = ms.get("none")
        speed = [_f(none / ms[f]) + "x" if none and ms[f] else "n/a" for f in fusions if f != "none"]
        out.append(f"| {shape} | {quant} | {batch} | {distinct} | " + " | ".join(_f(ms[f]) for f in fusions) + " | "
                   + " | ".join(speed) + " |")  # fmt: skip
    return ["## Decode fusions (same runner, same run)", *out, ""]


def pdl_table(rows: list[dict]) -> list[str]:
    """Step ms and x roofline per decode point and PDL mode (kernels.pdl), and each mode's speed-up over off."""
    modes = sorted({r["pdl"] for r in rows if r["kind"] == "decode" and "pdl" in r})
    if len(modes) < 2:
        return []
    on = [m for m in modes if m]
    out = ["| shape | weights | batch | adapters | " + " | ".join(f"pdl{m} ms (x roofline)" for m in modes) + " | "
           + " | ".join(f"pdl{m} vs off" for m in on) + " | rounds (ms) |", "|---" * (5 + len(modes) + len(on)) + "|"]  # fmt: skip
    points = dict.fromkeys((_shape(r), r["quant"], r["batch"], r["distinct"], r["rank"], r["targets"], r.get("fusion"))
                           for r in rows if r["kind"] == "decode" and "pdl" in r)  # fmt: skip
    for shape, quant, batch, distinct, rank, targets, fusion in points:
        got = {m: _find([r for r in rows if _shape(r) == shape], kind="decode", quant=quant, batch=batch, pdl=m,
                        distinct=distinct, rank=rank, targets=targets, fusion=fusion) for m in modes}  # fmt: skip
        cells = [f"{r['step_ms']:.3f} ({r['step_ms'] / r['roofline_ms']:.2f}x)" if r else "n/a" for r in got.values()]
        off = got.get(0)
        speed = [_f(off["step_ms"] / got[m]["step_ms"], 3) + "x" if off and got[m] else "n/a" for m in on]
        spread = "; ".join(f"pdl{m}: " + ", ".join(f"{v:.3f}" for v in r.get("round_ms", [])) for m, r in got.items() if r)
        out.append(f"| {shape} | {quant} | {batch} | {distinct} | " + " | ".join(cells) + " | " + " | ".join(speed)
                   + f" | {spread} |")  # fmt: skip
    return ["## Programmatic Dependent Launch (same runner, modes alternating; kernels.pdl)", *out, ""]


def profile_lines(meta: dict) -> list[str]:
    """Per-kernel GPU time per step of each profiled point (torch.profiler over CUDA-graph replays)."""
    profiles = meta.get("profiles") or {}
    if not profiles:
        return []
    out = ["## Per-kernel GPU time per step (torch.profiler, 3 graph replays)",
           "| point | kernel | us/step | calls/step | us/call |", "|---|---|---|---|---|"]  # fmt: skip
    for point, kernels in profiles.items():
        total = sum(k["us_per_step"] for k in kernels.values())
        for name, k in kernels.items():
            cells = f"{k['us_per_step']:.1f} | {k['calls_per_step']:.0f} | {k['us_per_call']:.2f}"
            out.append(f"| {point} | {name} | {cells} |")
        out.append(f"| {point} | (sum) | {total:.1f} | | |")
    return [*out, ""]


def prefill_table(rows: list[dict]) -> list[str]:
    out = ["| shape | system | weights | adapters (rank) | tokens | tokens/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "prefill":
            out.append(f"| {_shape(r)} | engine | {r['quant']} | {r['distinct']} ({r['rank']}) | {r['tokens']} "
                       f"| {r['tokens_per_s']:.0f} |")  # fmt: skip
        elif r["kind"] == "peft":
            out.append(f"| {_shape(r)} | transformers+PEFT | fp16 | {r['distinct']} ({r['rank']}) "
                       f"| {r['batch'] * r['prompt']} | {r['prefill_tokens_per_s']:.0f} |")  # fmt: skip
    return out


def peft_table(rows: list[dict]) -> list[str]:
    out = ["| shape | batch | adapters (rank 16, q/k/v/o) | PEFT step ms | PEFT tokens/s | engine int4 tokens/s | "
           "engine int3 tokens/s | engine fp16 tokens/s | int4 speedup |", "|---" * 9 + "|"]  # fmt: skip
    for r in (r for r in rows if r["kind"] == "peft"):
        want = dict(kind="decode", batch=r["batch"], distinct=r["distinct"], **({"shape": r["shape"]} if "shape" in r else {}))
        if r["distinct"]:
            want.update(rank=16, targets="qkvo")
        e4, e3, e16 = (_find(rows, quant=q, **want) for q in ("int4", "int3", "fp16"))
        speed = e4["tokens_per_s"] / r["tokens_per_s"] if e4 else None
        engine = " | ".join(_f(e and e["tokens_per_s"], 0) for e in (e4, e3, e16))
        out.append(f"| {_shape(r)} | {r['batch']} | {r['distinct']} | {_f(r['step_ms'])} | {r['tokens_per_s']:.0f} "
                   f"| {engine} | {_f(speed, 1) + 'x' if speed else 'n/a'} |")  # fmt: skip
    return out


def goals(rows: list[dict], meta: dict | None = None) -> list[str]:
    """The issue's decode goals (int4 g128) per shape in the run, each met / not met / not measured (rows of the
    default decode fusion when a run compares several); lines carry the shape when the run has several."""
    shapes = list(dict.fromkeys(_shape(r) for r in rows))
    out = []
    for shape in shapes:
        mine = [r for r in rows if _shape(r) == shape]
        out += [f"- {shape}: {g[2:]}" if len(shapes) > 1 else g for g in _goals(mine, meta)]
    return out or ["- (no goal point measured in this run)"]


def _goals(rows: list[dict], meta: dict | None) -> list[str]:
    out = []
    rows = [r for r in rows if r["kind"] != "decode" or all(r.get(k) == v for k, v in _default(rows, meta).items())]
    modes = list(dict.fromkeys(r.get("pdl") for r in rows if r["kind"] == "decode"))  # [None] unless --pdl
    for mode in modes:
        b1 = _find(rows, kind="decode", quant="int4", batch=1, distinct=0, **({} if mode is None else {"pdl": mode}))
        if b1:
            ratio = b1["step_ms"] / b1["roofline_ms"]
            what = "" if mode is None else f" (PDL mode {mode})"
            out.append(f"- decode at batch 1{what}: {ratio:.2f}x the roofline (goal <= 1.5x): "
                       f"{'met' if ratio <= 1.5 else 'NOT met'}")  # fmt: skip
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
    return out


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
            f"- shapes: {meta.get('shapes') or meta.get('shape')}; decode context {meta['context']} tokens per sequence",
            f"- measured copy bandwidth {meta['copy_GBps']:.0f} GB/s; roofline = bytes of weights (as stored: int4/int3 "
            "packed words (K*bits/32 rows) + g128 zeros and fp16 scales) + active adapters + KV cache read per step "
            "/ copy bandwidth",
            "- step time = median wall time of ModelRunner.execute (CPU work and the logits' copy to the host "
            "included; " + ("decode steps replay CUDA graphs)" if meta.get("cuda_graphs") else "no CUDA graphs)"),
            ""]  # fmt: skip
    if meta.get("wall_s") is not None:
        head.insert(6, f"- wall time {meta['wall_s']:.0f} s")
    if meta.get("max_seconds"):
        head.insert(-1, f"- time budget {meta['max_seconds']:.0f} s (--max-seconds): "
                        f"{meta.get('skipped', 'n/a')} measurements skipped")  # fmt: skip
    if meta.get("default_fusion"):
        head.insert(-1, f"- engine default decode fusion: {meta['default_fusion']} (goals use its rows)")
    return "\n".join(head + ["## Goals", *goals(rows, meta), "", *fusion_table(rows), *pdl_table(rows),
                             "## Decode steps",
                             *decode_table(rows), "", *profile_lines(meta),
                             "## Prefill", *prefill_table(rows), "", "## vs transformers + PEFT (decode)",
                             *peft_table(rows), "", "## Cost points (scheduling simulator)",
                             *cost_table(cost or []), ""])  # fmt: skip
