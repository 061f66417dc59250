"""Session 13 retune (helper H6): the decode-step decision for s13_retune.sh. Reads the decode JSON of s9_decode.py
(tables "old" = the tree's H200 table, "new" = it merged with the kernel retune's ship rows, alternating round by
round on one runner) and the ship json; per (model, batch): the two medians, per-round counts (new faster / equal /
slower than old in the same round), and the decision: a point passes when new's median step <= old's. M buckets map
one to one onto batches here (batch B's GEMVs run at M = B, bucket B for B in 2 / 4 / 8 / 16), so the ship rows of a
(model, bucket) whose decode point passed go to <final> (tuned_table.py's format); the rest are dropped. Points
where the two tables hold the same picks (no ship row) are reported as controls (the run's noise).
Usage: python3 bench/kernels/s13_retune_decode.py DECODE.json SHIP.json FINAL.json [--md OUT.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def model_of(row: dict) -> str:
    """A ship row's decode shape: "7B down 11008x4096" -> "7b"."""
    return row["shape"].split()[0].lower()


def decide(decode: dict) -> dict[tuple[str, int], dict]:
    """(model, batch) -> old / new median ms, per-round ms, counts and pass."""
    by: dict[tuple[str, int], dict] = {}
    for r in decode["rows"]:
        if r.get("kind") != "decode" or r.get("fusion") not in ("old", "new"):
            continue
        by.setdefault((r["shape"], int(r["batch"])), {})[r["fusion"]] = r
    out = {}
    for b, v in sorted(by.items()):
        if "old" not in v or "new" not in v:
            continue
        o, n = v["old"]["round_ms"], v["new"]["round_ms"]
        pairs = list(zip(o, n))
        out[b] = dict(old_ms=v["old"]["step_ms"], new_ms=v["new"]["step_ms"], old_rounds=o, new_rounds=n,
                      faster=sum(y < x for x, y in pairs), equal=sum(y == x for x, y in pairs),
                      slower=sum(y > x for x, y in pairs), rounds=len(pairs),
                      ratio=v["new"]["step_ms"] / v["old"]["step_ms"], passed=v["new"]["step_ms"] <= v["old"]["step_ms"])  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("decode", type=Path)
    ap.add_argument("ship", type=Path)
    ap.add_argument("final", type=Path)
    ap.add_argument("--md", type=Path, default=None)
    a = ap.parse_args()
    decode, ship = json.loads(a.decode.read_text()), json.loads(a.ship.read_text())
    res = decide(decode)
    keep = [r for r in ship["bench"] if res.get((model_of(r), int(r["M"])), {}).get("passed")]
    shipped_at = {(model_of(r), int(r["M"])) for r in ship["bench"]}
    a.final.write_text(json.dumps(dict(meta=ship["meta"], bench=keep), indent=1))
    md = [
        "| model | batch | old ms | new ms | new / old | rounds new faster / equal / slower | decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for (mdl, b), r in res.items():
        what = ("ship" if r["passed"] else "drop") if (mdl, b) in shipped_at else "control (same picks)"
        md.append(f"| {mdl} | {b} | {r['old_ms']:.3f} | {r['new_ms']:.3f} | {r['ratio']:.3f} | {r['faster']} / {r['equal']} / "
                  f"{r['slower']} of {r['rounds']} | {what} |")  # fmt: skip
    md += ["", f"- shipped rows: {len(keep)} of {len(ship['bench'])}: "
           + ", ".join(f"{r['shape']} M={r['M']}" for r in keep)]  # fmt: skip
    missing = sorted(shipped_at - set(res))
    if missing:
        md.append(f"- points without a decode comparison (rows dropped): {missing}")
    print("\n".join(md))
    if a.md:
        a.md.write_text(
            "\n".join(md) + "\n\n" + json.dumps({f"{k[0]} {k[1]}": v for k, v in res.items()}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
