"""Session 13: the split-by-split comparison of an s13_tcs.py run (its report JSON): for each (shape, M, split) the
iso / pdl us of every n128 / 4-stage tcs* kind timed (same run, same harness), each kind's speed-up over the base
kind (tcs0 where timed, else tcs), % of copy and x bf16 of the fastest, and the stress / diag logs' summaries.
Appends to the report's markdown and prints it.
Usage: python3 bench/kernels/s13_tcs_report.py bench/results/kernels-2026-11-30-s13-tcs   (the stem)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ORDER = ("tcs0", "tcs", "tcsa", "tcsaf", "tcs2", "tcs2a", "tcs2af")


def parse(cfg: str) -> dict:
    return {k: v.strip("'") for k, v in re.findall(r"(\w+)=([^,)]+)", cfg)}


def kind_of(cfg: str) -> str:
    return parse(cfg).get("kind", "")


def main() -> None:
    stem = Path(sys.argv[1])
    doc = json.loads(Path(f"{stem}.json").read_text())
    copy = doc["meta"]["copy_GBps"]
    kinds = [k for k in ORDER if any(kind_of(c) == k for r in doc["bench"] for c, _, _ in r.get("cands", []))]
    base = "tcs0" if "tcs0" in kinds else "tcs"
    head = " | ".join(f"{k} iso / pdl" for k in kinds)
    ratio = " | ".join(f"{k} / {base}" for k in kinds if k != base)
    md = ["", f"## Split by split (s13_tcs_report.py): n128, 4 stages, us iso / pdl; speed-up = {base} time / kind time",
          "", f"| shape | M | block_m | split | {head} | {ratio} | fastest % copy iso / pdl | fastest x bf16 iso / pdl |",
          "|" + "---|" * (6 + 2 * len(kinds) - 1)]  # fmt: skip
    ups: dict[str, list] = {k: [] for k in kinds}
    for r in doc["bench"]:
        by: dict = {}
        for cfg, iso, pdl in r.get("cands", []):
            p = parse(cfg)
            if p.get("kind") in kinds and p.get("block_n") == "128" and p.get("num_stages") == "4":
                by.setdefault(int(p["split_k"]), {})[p["kind"]] = (iso, pdl, int(p["block_m"]))
        for split, ks in sorted(by.items()):
            if base not in ks:
                continue
            b = ks[base]
            cells = [f"{ks[k][0]:.2f} / {ks[k][1]:.2f}" if k in ks else "-" for k in kinds]
            rats = []
            for k in kinds:
                if k == base:
                    continue
                if k in ks:
                    rats.append(f"{b[0] / ks[k][0]:.3f} / {b[1] / ks[k][1]:.3f}")
                    ups[k].append((b[0] / ks[k][0], b[1] / ks[k][1]))
                else:
                    rats.append("-")
            bi = min(t[0] for t in ks.values())
            bp = min(t[1] for t in ks.values())
            mb = r["MB"]
            md.append(f"| {r['shape']} | {r['M']} | {b[2]} | {split} | {' | '.join(cells)} | {' | '.join(rats)} | "
                      f"{100 * mb / bi / copy * 1e3:.0f}% / {100 * mb / bp / copy * 1e3:.0f}% | "
                      f"{r['bf16_us'] / bi:.2f} / {r['bf16_us'] / bp:.2f} |")  # fmt: skip
    md.append("")
    for k, v in ups.items():
        if v:
            gi, gp = sorted(x[0] for x in v), sorted(x[1] for x in v)
            md.append(f"- {k} / {base} over {len(v)} (shape, M, split) points: iso min {gi[0]:.3f} / median "
                      f"{gi[len(gi) // 2]:.3f} / max {gi[-1]:.3f}; pdl min {gp[0]:.3f} / median {gp[len(gp) // 2]:.3f} / "
                      f"max {gp[-1]:.3f}")  # fmt: skip
    for tag in ("stress-s12", "stress-acc", "diag"):
        f = Path(f"{stem}-{tag}.jsonl")
        if not f.exists():
            continue
        rows = [json.loads(ln[: ln.rindex("}") + 1]) for ln in f.read_text().splitlines() if ln.startswith("{")]
        md += ["", f"### {tag} ({f.name})", "", "| K x N | M | config | launches | wrong / dirty | worst error |",
               "|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            c = parse(r["cfg"])
            cfg = f"{c['kind']} m{c['block_m']} n{c['block_n']} s{c['split_k']} st{c['num_stages']}"
            worst = r["worst"] if isinstance(r["worst"], float) else max(r["worst"].values())
            m = r.get("M", "/".join(r["worst"]) if isinstance(r["worst"], dict) else "")
            wrong = r.get("bad", r.get("fails", 0))
            runs = r["runs"]
            md.append(f"| {r['K']}x{r['N']} | {m} | {cfg} | {runs} | {wrong} / {r.get('dirty', '-')} | {worst:.2e} |")
    out = Path(f"{stem}.md")
    out.write_text(out.read_text() + "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
