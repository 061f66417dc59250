"""Session 11: quant_tcv (kinds tcv / tcv2: 16-byte word loads straight into the wgmma operand, x staged once per
program, one shift a word) against the shipped picks at M = 2..16 on the 7B decode shapes, with session 8/9's
machinery (s8_gemv.py: checks PDL off and on, iso / pdl timing over rotating weights, 32-layer chains under PDL,
bf16 cuBLAS and copy bandwidth in the same run). One device call (s11_gemv.sh):

  check   every candidate (the tcv candidates of quant_matmul_config and the shipped pick) of each (shape, M), PDL
          off and on: error vs the fp32 dequantized product, workspace clean
  bench   bf16 cuBLAS, each checked candidate iso and pdl; then the chains (up/down and the decode layer) with the
          old picks (shipped table at HEAD) and the new ones (least iso + pdl, s8_gemv.ship), bf16 in the same chains
  report  markdown + JSON (bench rows in tuned_table.py's format)
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s11_gemv.py {check,bench,report} --out DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import s8_gemv as s8
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels.quant_matmul_config import QMMConfig

s8.MS = (2, 4, 8, 16)


# the tcv plans the 2026-11-30 run timed (block_n, num_stages, kind) x splits, at M = 2..16 (block_m 8, 16 at M = 16);
# the tuner keeps a trimmed set (quant_matmul_config.TCV_PLANS)
PLANS = ((64, 4, "tcv"), (64, 6, "tcv"), (128, 4, "tcv"), (128, 4, "tcv2"), (64, 2, "tcv"), (128, 2, "tcv"))
SPLITS = (4, 8, 16)


def candidates(k: int, n: int, m: int) -> list[QMMConfig]:
    """The tcv plans above (where quant_tcv supports them) and the shipped pick ("before")."""
    from inlaid_worker.kernels.quant_tcv import X_SMEM_MAX, staged_bytes

    bm = 16 if m > 8 else 8
    out = []
    for bn, st, kind in PLANS:
        for s in SPLITS:
            iters = -(-(k // 128) // min(s, k // 128))
            if n % bn == 0 and staged_bytes(iters, st, bm, bn) <= X_SMEM_MAX:
                out.append(QMMConfig(bm, bn, 128, s, 4, st, True, kind))
    old = s8.shipped(k, n, m)
    if old is not None and old not in out:
        out.append(old)
    return out


def chains(out: Path, doc: dict, rows: list[dict]) -> None:
    """32-layer chains under PDL: old (shipped at HEAD) and new (least iso + pdl) picks, bf16 in the same chains."""
    pick = {(r["shape"], r["M"]): s8.ship(r) for r in rows}

    def variants(label: str, m: int, names: list[str]) -> dict[str, list]:
        return {"old": [pick[(s, m)].get("before") for s in names], "new": [pick[(s, m)].get("pick") for s in names]}

    s8.time_chains(out, doc, variants)


s8.candidates = candidates  # s8_gemv's check and bench call these module globals
s8.chains = chains


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    doc = json.loads((out / "bench.json").read_text())
    meta, rows, chs = doc["meta"], [s8.ship(r) for r in doc["bench"]], doc["chains"]
    pct = s8.copy_pct(meta)
    md = [f"# Session 11: quant_tcv against the shipped picks, 7B decode shapes, M = 2..16, {meta.get('date', '')}", "",
          *report_head(meta, command),
          "- times: us per GEMV call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = "
          "launched plainly, pdl = the same graph captured with PDL; % of copy = packed bytes / time / copy bandwidth; "
          "x bf16 = bf16 cuBLAS (same harness, iso) / int4 time",
          "- candidates: the tcv / tcv2 candidates (quant_matmul_config._tcv) and the shipped pick, each checked first "
          "(error vs the fp32 dequantized product <= 1e-2, workspace clean, PDL off and on); before = the shipped "
          "table at HEAD; new = least iso + pdl (s8_gemv.ship)", "",
          "## Per shape and M", "",
          "| shape | M | bf16 | before | before iso / pdl | new pick | new iso / pdl | % copy (iso / pdl) | x bf16 (iso / pdl) | fastest pdl (iso / pdl) |",
          "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    md += [s8.retune_row(r, pct) for r in rows]
    best_tcv = []
    for r in rows:
        tc = [t for t in r.get("cands", []) if "kind='tcv" in t[0]]
        if tc:
            b = min(tc, key=lambda t: t[1] + t[2])
            best_tcv.append(f"| {r['shape']} | {r['M']} | {short_cfg(b[0], False)} | {b[1]:.2f} / {b[2]:.2f} | "
                            f"{s8.show(r.get('before_iso_us'))} / {s8.show(r.get('before_us'))} |")  # fmt: skip
    md += [
        "",
        "## Best tcv candidate against the shipped pick (same run, iso / pdl us)",
        "",
        "| shape | M | best tcv | tcv iso / pdl | shipped iso / pdl |",
        "|---|---|---|---|---|",
        *best_tcv,
    ]
    md += s8.chain_table(chs, ("old", "new"), pct, "; bf16 launched plainly")
    checks = s8.read_checks(out)
    if checks:
        ok = [c for c in checks if "error" not in c]
        md += ["", "## Check (every timed candidate, PDL off and on)", "",
               f"- {len(checks)} candidates, {len(checks) - len(ok)} raised; worst relative error vs the fp32 dequantized "
               f"product {s8.worst_err(ok):.2e}; workspace clean after every run: "
               f"{all(c['clean'] and c['clean_pdl'] for c in ok)}"]  # fmt: skip
        md += [f"- raised: {c['cfg']} {c['error'][:200]}" for c in checks if "error" in c][:8]
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), bench=rows, chains=chs))


def main() -> None:
    ap = device_parser(("check", "bench"), "bash bench/kernels/s11_gemv.sh", "kernels-2026-11-30-s11-gemv")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    run_phase(ap, dict(check=lambda a: s8.check(a.out, a.shard, a.shards), bench=lambda a: s8.bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
