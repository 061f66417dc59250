"""Session 9: retune of the 7B decode GEMVs at M = 1..16 with quant_tcg.BALANCE on (session 8's padding of one-wave
ring grids under PDL), with session 8's machinery (s8_gemv.py: same shapes, checks, iso / pdl timing, ship rule),
minus the finish-epilogue twins (refuted in session 8, not tuner candidates). One device call (s9_gemv.sh):

  check   as s8_gemv check (every candidate, PDL off and on, error and workspace)
  bench   as s8_gemv bench (bf16 cuBLAS, every checked candidate iso and pdl), then 32-layer chains under PDL with
          the old picks (shipped table at HEAD), the new table picks and the fastest-pdl picks, bf16 in the same chains
  report  markdown + JSON; the JSON's bench rows carry `pick` = the table pick (table_pick): s8's ship rule (least
          iso + pdl); at M = 1 the old pick unless the new one is >= 3% faster both iso and pdl
  tables  the tables a decode comparison alternates: the tree's table with each patch of a patches file
  final   the shipped table from the decode comparison (s9_decode.py's JSON): the new picks of a decode shape only
          in the batch buckets where the decode step with the new table was not slower than with the old one
Env S9_SHAPES=13b: the check / bench phases take the 13B decode shapes instead (no chains).
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s9_gemv.py {check,bench,report,final} --out DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import s8_gemv as s8
import torch
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, candidate_configs

CLEAR = 0.97  # M = 1: the new pick must be at least 3% faster both iso and pdl to replace the old one
# (N, K) of the decode steps' qkv, o, gate/up, down: 7B, then 13B
DECODE_SHAPES = {(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008),
                 (15360, 5120), (5120, 5120), (27648, 5120), (5120, 13824)}  # fmt: skip
SETS = {  # env S9_SHAPES picks the set the check / bench phases run (name: (K, N), as s8_gemv.SHAPES)
    "7b": dict(s8.SHAPES),
    "13b": {"13B qkv 5120x15360": (5120, 15360), "13B o 5120x5120": (5120, 5120),
            "13B gate/up 5120x27648": (5120, 27648), "13B down 13824x5120": (13824, 5120)},
}  # fmt: skip
s8.SHAPES = SETS[os.environ.get("S9_SHAPES", "7b")]


def candidates(k: int, n: int, m: int) -> list[QMMConfig]:
    """Today's hgemvr / tensor-core candidates and the shipped pick ("before"); no finish twins."""
    out = [c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind.startswith(("hgemvr", "tc"))]
    old = s8.shipped(k, n, m)
    if old is not None and old not in out:
        out.append(old)
    return out


def table_pick(row: dict) -> dict:
    """s8_gemv.ship (least iso + pdl), then the M = 1 rule: the old pick stays unless the new one is clearly faster
    (CLEAR) both iso and pdl. `m1_kept` marks a row where the rule kept the old pick."""
    out = s8.ship(row)
    if row["M"] != 1 or out.get("pick") in (None, row.get("before")):
        return out
    old_iso, old_pdl = row.get("before_iso_us"), row.get("before_us")
    clear = old_iso is not None and old_pdl is not None and out["pick_iso_us"] <= CLEAR * old_iso \
        and out["pick_us"] <= CLEAR * old_pdl  # fmt: skip
    if not clear and old_iso is not None:
        out["m1_rejected"], out["m1_rejected_iso_us"], out["m1_rejected_us"] = (
            out["pick"],
            out["pick_iso_us"],
            out["pick_us"],
        )
        out["pick"], out["pick_iso_us"], out["pick_us"] = row["before"], old_iso, old_pdl
        out["m1_kept"] = True
    return out


def chains(out: Path, doc: dict, rows: list[dict]) -> None:
    """32-layer chains under PDL (s8_gemv's up/down and decode-layer chains): old (shipped at HEAD), new (table
    picks) and fastest-pdl picks where they differ from new; bf16 cuBLAS in the same chains."""
    pick = {(r["shape"], r["M"]): table_pick(r) for r in rows}
    if "7B down 11008x4096" not in s8.SHAPES:
        return  # the chains are the 7B ones

    def variants(label: str, m: int, names: list[str]) -> dict[str, list]:
        vs = {"old": [pick[(s, m)].get("before") for s in names],
              "new": [pick[(s, m)].get("pick") for s in names]}  # fmt: skip
        # ("old" is timed even where it equals "new": the pair shows the run's noise)
        fastest = [pick[(s, m)].get("pdl_pick") for s in names]
        if fastest != vs["new"]:
            vs["pdl"] = fastest
        return vs

    s8.time_chains(out, doc, variants)


s8.candidates = candidates  # s8_gemv's check and bench call these module globals
s8.chains = chains


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    from inlaid_worker.kernels import quant_tcg

    doc = json.loads((out / "bench.json").read_text())
    meta, rows, chs = doc["meta"], [table_pick(r) for r in doc["bench"]], doc["chains"]
    pct = s8.copy_pct(meta)

    shapes = ", ".join(sorted({r["shape"].split()[0] for r in rows}))
    md = [f"# Session 9 GEMV retune ({shapes}) with quant_tcg.BALANCE on, {meta.get('date', '')}", "",
          *report_head(meta, command),
          f"- quant_tcg.BALANCE = {quant_tcg.BALANCE} (on: ring GEMVs of one-wave grids padded under PDL to their even "
          "share of SMs)",
          "- times: us per GEMV call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = "
          "launched plainly (the README kernel table's definition), pdl = the same graph captured with PDL (each launch "
          "overlaps the previous one's tail, as in the decode graphs); % of copy = packed bytes / time / copy bandwidth; "
          "x bf16 = bf16 cuBLAS (same harness, iso) / int4 time",
          "- candidates: today's hgemvr* / tc* candidates (no finish twins) and the shipped pick, each checked first "
          "(error vs the fp32 dequantized product <= 1e-2, workspace clean, PDL off and on); before = the shipped table "
          "at HEAD; new = least iso + pdl (s8_gemv.ship); at M = 1 the old pick stays unless the new one is >= 3% "
          "faster both iso and pdl (\"kept\")", "",
          "## Retune (per shape and M)", "",
          "| shape | M | bf16 | before | before iso / pdl | new pick | new iso / pdl | % copy (iso / pdl) | x bf16 (iso / pdl) | fastest pdl (iso / pdl) |",
          "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        kept = f" (kept; best {short_cfg(r['m1_rejected'], False)} {s8.show(r['m1_rejected_iso_us'])} / " \
            f"{s8.show(r['m1_rejected_us'])})" if r.get("m1_kept") else ""  # fmt: skip
        md.append(s8.retune_row(r, pct, kept))
    md += s8.chain_table(chs, ("old", "new", "pdl"), pct, "; bf16 launched plainly")
    checks = s8.read_checks(out)
    if checks:
        ok = [c for c in checks if "error" not in c]
        worst = s8.worst_err(ok)
        md += ["", "## Check (every timed candidate, PDL off and on)", "",
               f"- {len(checks)} candidates, {len(checks) - len(ok)} raised; worst relative error vs the fp32 dequantized "
               f"product {worst:.2e}; workspace and counters clean after every run: "
               f"{all(c['clean'] and c['clean_pdl'] for c in ok)}"]  # fmt: skip
    write_report(dest, stem, md, dict(meta=dict(meta, command=command, balance=quant_tcg.BALANCE), bench=rows,
                                      chains=chs))  # fmt: skip


def decode_verdict(decode: dict, old: str = "old", new: str = "new") -> dict[int, dict]:
    """batch -> {old_ms, new_ms, ratio, ship}: the pooled medians of the two tables' variants (s9_decode.py rows:
    `fusion` = the table's name); ship = the new table's step was not slower."""
    by: dict[int, dict] = {}
    for r in decode.get("rows", []):
        if r.get("kind") == "decode" and r.get("fusion") in (old, new):
            by.setdefault(int(r["batch"]), {})[f"{'old' if r['fusion'] == old else 'new'}_ms"] = r["step_ms"]
            by[int(r["batch"])][f"{'old' if r['fusion'] == old else 'new'}_rounds"] = r.get("round_ms")
    for v in by.values():
        if "old_ms" in v and "new_ms" in v:
            v["ratio"] = v["new_ms"] / v["old_ms"]
            v["ship"] = v["new_ms"] <= v["old_ms"]
    return by


def final_table(old: dict, new: dict, verdict: dict[int, dict]) -> dict:
    """The new table, except decode shapes in the batch buckets whose decode step was slower with it (or was not
    measured): those keep the old entries. Other shapes (e.g. the goals' unfused up) take the new entries."""
    key = lambda e: (e["dtype"], e["m_bucket"], e["n"], e["k"], e["bits"], e["group"])  # noqa: E731
    olds = {key(e): e for e in old["entries"]}
    entries = []
    for e in new["entries"]:
        decode_shape = (e["n"], e["k"]) in DECODE_SHAPES and e["bits"] == 4 and e["dtype"] == "float16"
        if decode_shape and not verdict.get(e["m_bucket"], {}).get("ship", False) and key(e) in olds:
            entries.append(olds[key(e)])
        else:
            entries.append(e)
    return dict(new, entries=sorted(entries, key=key))


def final(a) -> None:  # type: ignore[no-untyped-def]
    decode = json.loads(Path(a.decode).read_text())
    old, new = json.loads(Path(a.old_table).read_text()), json.loads(Path(a.new_table).read_text())
    verdict = decode_verdict(decode)
    table = final_table(old, new, verdict)
    Path(a.dest_table).write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps({str(b): {k: v for k, v in d.items() if "rounds" not in k} for b, d in sorted(verdict.items())}))
    was = {(e["m_bucket"], e["n"], e["k"], e["bits"], e["dtype"]): e["config"] for e in old["entries"]}
    changed = sum(
        1 for e in table["entries"] if was.get((e["m_bucket"], e["n"], e["k"], e["bits"], e["dtype"])) != e["config"]
    )
    print(f"final table: {len(table['entries'])} entries, {changed} picks differ from the old table -> {a.dest_table}")


def patched(base: dict, patch: list[dict]) -> dict:
    """`base` with the entries of `patch` in place of base's entries of the same key (dtype, m bucket, n, k, bits,
    group); a patch entry with a new key is added."""
    key = lambda e: (e["dtype"], e["m_bucket"], e["n"], e["k"], e["bits"], e["group"])  # noqa: E731
    entries = {key(e): e for e in base["entries"]} | {key(e): e for e in patch}
    return dict(base, entries=[entries[k] for k in sorted(entries)])


def tables(a) -> None:  # type: ignore[no-untyped-def]
    """--patches FILE (kernels-2026-11-30-s9-tables.json) applied to --old-table (the tree's table): DIR/<name>-table.json
    per patch, DIR = --out."""
    base = json.loads(Path(a.old_table).read_text())
    for name, patch in json.loads(Path(a.patches).read_text())["patches"].items():
        (a.out / f"{name}-table.json").write_text(json.dumps(patched(base, patch), indent=1) + "\n")
        print(f"{name}: {len(patch)} entries patched -> {a.out / f'{name}-table.json'}")


def main() -> None:
    ap = device_parser(
        ("check", "bench", "final", "tables"), "bash bench/kernels/s9_gemv.sh", "kernels-2026-11-30-s9-gemv"
    )
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--decode", default="", help="final: s9_decode.py's JSON")
    ap.add_argument("--old-table", default="", help="final: the table at HEAD")
    ap.add_argument("--new-table", default="", help="final: the table with every new pick")
    ap.add_argument("--dest-table", default="", help="final: where the shipped table goes")
    ap.add_argument("--patches", default="", help="tables: the patches file")
    run_phase(ap, dict(check=lambda a: s8.check(a.out, a.shard, a.shards), bench=lambda a: s8.bench(a.out),
                       final=final, tables=tables), report)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
