"""Markdown tables of s15_anatomy.py runs: every variant's step time against the shipped step's (per run), and the
per-kernel-class table (iso time, bytes, iso GB/s against the copy bandwidth, step delta when ablated, the part of
that delta beyond the class's byte time at copy bandwidth).
Usage: python3 bench/kernels/s15_report.py RUN1.json [RUN2.json ...]
"""

from __future__ import annotations

import json
import sys

# class -> (iso key, launches a step, the ablation variants: "none" first)
CLASSES = {
    "qkv GEMV (hgemvr)": ("qkv", 32, ["qkv=none", "qkv=read"]),
    "row attention + rope (_row_kernel)": ("attn", 32, ["attn=none", "attn=empty"]),
    "o GEMV (hgemvrb, deferred sums)": ("o", 32, ["o=none", "o=read"]),
    "add + RMSNorm from sums (1 CTA)": ("norm_o", 64, ["norm=none", "norm=empty", "norm=copy"]),
    "gate/up GEMV + SwiGLU (hgemvr)": ("gu", 32, ["gu=none", "gu=read"]),
    "down GEMV (hgemvr, deferred sums)": ("down", 32, ["down=none", "down=read"]),
}


def variants_table(runs: list[dict]) -> str:
    names: list[str] = []
    for r in runs:
        names += [n for n in r.get("summary", {}) if n not in names]
    head = (
        "| variant | "
        + " | ".join(f"run {i + 1}: ms (spread us) | delta us/step [min, max], lower" for i in range(len(runs)))
        + " |"
    )
    lines = [head, "|---|" + "---|---|" * len(runs)]
    for n in names:
        cells = []
        for r in runs:
            s = r.get("summary", {}).get(n)
            if s is None:
                cells += ["-", "-"]
                continue
            cells += [f"{s['median_ms']:.4f} ({s['spread_ms'] * 1e3:.1f})",
                      f"**{s['delta_us']:+.1f}** [{s['delta_us_min']:+.1f}, {s['delta_us_max']:+.1f}], "
                      f"{s['lower']}/{s['rounds']}"]  # fmt: skip
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(r: dict) -> str:
    bw = r["copy_GBps"] * 1e9
    iso, summ, meta = r["iso"], r["summary"], r["meta"]
    lines = ["| kernel class | launches | grid x warps | MB / launch | iso us | iso GB/s (x copy) | pure read at its "
             "grid: iso us (x copy) | byte time us / step | step time saved us (none / empty / copy / read) | none's "
             "saving beyond the byte time, us / step (/ launch) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, (key, n, abl) in CLASSES.items():
        it = iso.get(key, {})
        cls = key.removeprefix("norm_")
        m = meta.get("norm" if key.startswith("norm") else cls, {})
        grid = "x".join(str(g) for g in m.get("grid", [])) + f" x {m.get('warps', '?')}w"
        nbytes = it.get("bytes") or 0
        rd = iso.get("read_" + cls) if not key.startswith("norm") else None
        rd_s = f"{rd['us']:.2f} ({rd['frac_copy']:.2f})" if rd else "-"
        byte_us = n * nbytes / bw * 1e6
        deltas = ", ".join(f"{v.split('=')[1]} {-summ[v]['delta_us']:.1f}" for v in abl if v in summ)
        none = summ.get(abl[0])
        beyond = (-none["delta_us"] - byte_us) if none else None
        beyond_s = f"**{beyond:.1f}** ({beyond / n:.2f})" if beyond is not None else "-"
        lines.append(f"| {label} | {n} | {grid} | {nbytes / 1e6:.3f} | {it.get('us', 0):.2f} | "
                     f"{(it.get('GBps') or 0):.0f} ({(it.get('frac_copy') or 0):.2f}) | {rd_s} | {byte_us:.1f} | "
                     f"{deltas} | {beyond_s} |")  # fmt: skip
    for key in ("norm_down", "empty", "lm_head"):
        if key in iso:
            it = iso[key]
            lines.append(f"| iso only: {key} | - | - | {(it.get('bytes') or 0) / 1e6:.3f} | {it['us']:.2f} | "
                         f"{(it.get('GBps') or 0):.0f} ({(it.get('frac_copy') or 0):.2f}) | - | - | - | - |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    runs = [json.loads(open(p).read()) for p in sys.argv[1:]]
    for i, r in enumerate(runs):
        print(
            f"run {i + 1}: {r['date']}, {r['device']}, copy {r['copy_GBps']:.0f} GB/s, roofline {r['roofline_ms']:.3f} "
            f"ms, base {r['summary']['base']['median_ms']:.4f} ms, wall {r.get('wall_s', 0):.0f} s\n"
        )
    print(variants_table(runs))
    for i, r in enumerate(runs):
        if "iso" in r and "summary" in r and all(v in r["summary"] for v in ("qkv=none", "attn=none")):
            print(f"\nrun {i + 1} classes:\n")
            print(class_table(r))


if __name__ == "__main__":
    main()
