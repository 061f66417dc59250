"""Session 12: quant_tcs (kinds tcs / tcss: a TMA producer warp keeps a deep ring of word tiles in flight, 1-2 consumer
warpgroups of 64 columns, x staged once per program) against the shipped picks at M = 1..16 on the goal shapes (7B up
4096x11008, down 11008x4096), with session 8/9's machinery (s8_gemv.py: checks PDL off and on, iso / pdl timing over
rotating weights, the 32-layer up/down chain under PDL, bf16 cuBLAS and copy bandwidth in the same run). One device
call (s12_tcs.sh):

  check   every candidate (the tcs plans below and the shipped pick) of each (shape, M), PDL off and on: error vs the
          fp32 dequantized product, workspace clean
  bench   bf16 cuBLAS, each checked candidate iso and pdl; the up/down chain with the old picks (shipped table) and
          the new ones (least iso + pdl, s8_gemv.ship)
  report  markdown + JSON (bench rows in tuned_table.py's format)
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s12_tcs.py {check,bench,report} --out DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import s8_gemv as s8
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels.quant_matmul_config import QMMConfig

# S12_LAYER=1: the decode step's own shapes (qkv, o, gate/up, down) at M = 4..16 with the plan that won the goal
# shapes, and the 32-layer "layer" chain (old vs new picks); default: the goal shapes (up, down) at M = 1..16
LAYER = os.environ.get("S12_LAYER", "0") == "1"
s8.MS = (4, 8, 16) if LAYER else (1, 2, 4, 8, 16)
STEP_SHAPES = ("7B qkv 4096x12288", "7B o 4096x4096", "7B gate/up 4096x22016", "7B down 11008x4096")
GOAL_SHAPES = ("7B up 4096x11008", "7B down 11008x4096")
s8.SHAPES = {k: v for k, v in s8.SHAPES.items() if k in (STEP_SHAPES if LAYER else GOAL_SHAPES)}
s8.CHAINS = s8.CHAINS[1:] if LAYER else s8.CHAINS[:1]  # the decode layer, or up/down

# (block_n = 64 x consumer warpgroups, ring stages, kind) x splits; programs kept between 128 and ~1100
PLANS = ((128, 4, "tcs"),) if LAYER else ((128, 6, "tcs"), (128, 4, "tcs"), (64, 8, "tcs"), (64, 4, "tcs"),
                                          (128, 6, "tcss"))  # fmt: skip
SPLITS = (2, 3, 4, 8) if LAYER else (2, 3, 4, 6, 8, 11)
# overrides for short runs: S12_PLANS="128:4:tcs2,128:6:tcs2" (block_n:stages:kind), S12_SPLITS="3,8",
# S12_SHAPES="7B down 11008x4096,..." (a subset of the shapes above), S12_CHAINS=0 (no chain timing), S12_KIND=tcs2
# (the kind the "best" table and the ship rule compare with the shipped pick; default: every tcs* kind)
if os.environ.get("S12_PLANS"):
    PLANS = tuple((int(b), int(st), kd) for b, st, kd in (p.split(":") for p in os.environ["S12_PLANS"].split(",")))
if os.environ.get("S12_SPLITS"):
    SPLITS = tuple(int(v) for v in os.environ["S12_SPLITS"].split(","))
if os.environ.get("S12_SHAPES"):
    s8.SHAPES = {k: v for k, v in s8.SHAPES.items() if k in os.environ["S12_SHAPES"].split(",")}
NEW_KIND = os.environ.get("S12_KIND", "")


def is_new(cfg: str) -> bool:
    """A candidate of the kind under test (S12_KIND exactly, else any tcs* kind)."""
    return f"kind='{NEW_KIND}'" in cfg if NEW_KIND else "kind='tcs" in cfg


def candidates(k: int, n: int, m: int) -> list[QMMConfig]:
    """The tcs plans above (where they fit quant_tcs.SMEM_MAX) and the shipped pick ("before")."""
    from inlaid_worker.kernels.quant_tcs import fits

    bm = 8 if m <= 8 else 16
    out = []
    for bn, st, kind in PLANS:
        for s in SPLITS:
            programs = -(-n // bn) * min(s, k // 128)
            if 128 <= programs <= 1100 and fits(k, bm, s, st, bn // 64):
                out.append(QMMConfig(bm, bn, 128, s, 4, st, True, kind))
    old = s8.shipped(k, n, m)
    if old is not None and old not in out:
        out.append(old)
    return out


def chains(out: Path, doc: dict, rows: list[dict]) -> None:
    """The 32-layer up/down chain under PDL: old (shipped at HEAD) and new (least iso + pdl) picks, bf16 in the same
    chain."""
    if os.environ.get("S12_CHAINS") == "0":
        return
    pick = {(r["shape"], r["M"]): s8.ship(r) for r in rows}

    def variants(label: str, m: int, names: list[str]) -> dict[str, list]:
        return {"old": [pick[(s, m)].get("before") for s in names], "new": [pick[(s, m)].get("pick") for s in names]}

    s8.time_chains(out, doc, variants)


s8.candidates = candidates  # s8_gemv's check and bench call these module globals
s8.chains = chains


def check(out: Path, shard: int, shards: int) -> None:
    """s8_gemv.check's records, sharded by (shape, config) rather than (shape, M): every M of one compiled kernel runs
    in one process (Triton's disk cache then compiles each kernel once, not once per concurrent M)."""
    import time

    import torch

    random_gptq, rel_err, workspace_clean, run_cfg = s8._gpu()
    from inlaid_worker.kernels import pdl

    groups: dict[tuple[str, str], list[int]] = {}
    for shape, m in s8.pairs():
        k, n = s8.SHAPES[shape]
        for c in candidates(k, n, m):
            groups.setdefault((shape, str(c)), []).append(m)
    mine = sorted(groups)[shard::shards]
    weights: dict[str, object] = {}
    with (out / f"check-{shard}.jsonl").open("w") as f:
        for shape, cs in mine:
            k, n = s8.SHAPES[shape]
            if shape not in weights:
                torch.manual_seed(0)
                weights[shape] = random_gptq(k, n, 4, False)
            w = weights[shape]
            c = eval(cs, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
            for m in groups[(shape, cs)]:
                t0 = time.time()
                torch.manual_seed(m)
                x = torch.randn(m, k, device="cuda").half()
                row: dict = dict(shape=shape, M=m, cfg=cs)
                try:
                    row["err"] = rel_err(x, w, run_cfg(x, w, c))
                    row["clean"] = workspace_clean()
                    with pdl.scope(1):
                        row["err_pdl"] = rel_err(x, w, run_cfg(x, w, c))
                    row["clean_pdl"] = workspace_clean()
                except Exception as exc:  # noqa: BLE001 - reported, and the candidate is not timed
                    row["error"] = repr(exc)[:300]
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"[check {shard}] {shape} M={m} {short_cfg(cs)} {row.get('err', row.get('error'))} "
                      f"{time.time() - t0:.1f}s", flush=True)  # fmt: skip


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    doc = json.loads((out / "bench.json").read_text())
    meta, rows, chs = doc["meta"], [s8.ship(r) for r in doc["bench"]], doc["chains"]
    pct = s8.copy_pct(meta)
    what = "the decode step's shapes, M = 4..16" if LAYER else "7B up / down, M = 1..16"
    md = [f"# Session 12: quant_tcs (TMA word ring) against the shipped picks, {what}, {meta.get('date', '')}", "",
          *report_head(meta, command),
          "- times: us per GEMV call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = "
          "launched plainly, pdl = the same graph captured with PDL; % of copy = packed bytes / time / copy bandwidth; "
          "x bf16 = bf16 cuBLAS (same harness, iso) / int4 time",
          "- candidates: the tcs / tcss plans of s12_tcs.PLANS x SPLITS and the shipped pick, each checked first "
          "(error vs the fp32 dequantized product <= 1e-2, workspace clean, PDL off and on); before = the shipped "
          "table at HEAD; new = least iso + pdl (s8_gemv.ship)", "",
          "## Per shape and M", "",
          "| shape | M | bf16 | before | before iso / pdl | new pick | new iso / pdl | % copy (iso / pdl) | x bf16 (iso / pdl) | fastest pdl (iso / pdl) |",
          "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    md += [s8.retune_row(r, pct) for r in rows]
    best = []
    for r in rows:
        tc = [t for t in r.get("cands", []) if is_new(t[0])]
        if tc:
            b = min(tc, key=lambda t: t[1] + t[2])
            bi = min(tc, key=lambda t: t[1])
            bp = min(tc, key=lambda t: t[2])
            old_i, old_p = r.get("before_iso_us"), r.get("before_us")
            ratio = f"{old_i / b[1]:.3f} / {old_p / b[2]:.3f}" if old_i and old_p else "-"
            best.append(f"| {r['shape']} | {r['M']} | {short_cfg(b[0], False)} | {b[1]:.2f} / {b[2]:.2f} | "
                        f"{s8.show(old_i)} / {s8.show(old_p)} | {ratio} | {pct(r['MB'], b[1])} / {pct(r['MB'], b[2])} | "
                        f"{r['bf16_us'] / b[1]:.2f} / {r['bf16_us'] / b[2]:.2f} | {bi[1]:.2f} / {bp[2]:.2f} |")  # fmt: skip
    md += ["", "## Best tcs candidate (least iso + pdl) against the shipped pick (same run)", "",
           "| shape | M | best tcs | tcs iso / pdl us | shipped iso / pdl us | speed-up iso / pdl | tcs % copy iso / pdl | tcs x bf16 iso / pdl | fastest tcs iso / pdl (any) |",
           "|---|---|---|---|---|---|---|---|---|", *best]  # fmt: skip
    md += s8.chain_table(chs, ("old", "new"), pct, "; bf16 launched plainly")
    checks = s8.read_checks(out)
    if checks:
        ok = [c for c in checks if "error" not in c]
        md += ["", "## Check (every timed candidate, PDL off and on)", "",
               f"- {len(checks)} candidates, {len(checks) - len(ok)} raised; worst relative error vs the fp32 dequantized "
               f"product {s8.worst_err(ok):.2e}; workspace clean after every run: "
               f"{all(c['clean'] and c['clean_pdl'] for c in ok)}"]  # fmt: skip
        md += [f"- raised: {c['cfg']} {c['error'][:200]}" for c in checks if "error" in c][:8]
        top = sorted(ok, key=lambda c: -max(c["err"], c["err_pdl"]))[:4]
        md += [
            "- largest errors (off / on): "
            + "; ".join(
                f"{c['shape']} M = {c['M']} {short_cfg(c['cfg'], False)} {c['err']:.2e} / {c['err_pdl']:.2e}"
                for c in top
            )
        ]
    ship = ship_rows(rows)
    shipped = [f"- {r['shape']} M = {r['M']}: {short_cfg(r['pick'], False)} {r['pick_iso_us']:.2f} / {r['pick_us']:.2f} us "
               f"(was {r['before_iso_us']:.2f} / {r['before_us']:.2f})" for r in ship]  # fmt: skip
    md += [
        "",
        "## Shipped (best tcs >= 3% faster than the shipped pick, iso and pdl, same run)",
        "",
        *(shipped or ["- none"]),
    ]
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), bench=rows, chains=chs))
    (dest / f"{stem}-ship.json").write_text(json.dumps(dict(meta=dict(meta, command=command), bench=ship), indent=1))


def ship_rows(rows: list[dict], margin: float = 1.03) -> list[dict]:
    """Rows (tuned_table.py's format) whose best tcs candidate (least iso + pdl) is >= 3% faster than the shipped
    pick both iso and under PDL in this run; pick = that candidate."""
    out = []
    for r in rows:
        tc = [t for t in r.get("cands", []) if is_new(t[0])]
        old_i, old_p = r.get("before_iso_us"), r.get("before_us")
        if not tc or not old_i or not old_p:
            continue
        b = min(tc, key=lambda t: t[1] + t[2])
        if old_i >= margin * b[1] and old_p >= margin * b[2]:
            keep = {a: v for a, v in r.items() if a not in ("cands", "pdl_pick", "pdl_pick_iso_us", "pdl_pick_us")}
            out.append(dict(keep, pick=b[0], pick_iso_us=b[1], pick_us=b[2]))
    return out


def main() -> None:
    ap = device_parser(("check", "bench"), "bash bench/kernels/s12_tcs.sh", "kernels-2026-11-30-s12-tcs")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    run_phase(ap, dict(check=lambda a: check(a.out, a.shard, a.shards), bench=lambda a: s8.bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
