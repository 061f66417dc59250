"""Writes the worker's shipped tuner picks (workers/inlaid_worker/kernels/tuned/<device>.json) from the kernel
benchmarks' JSON (bench/results/kernels-*.json: `bench` rows with N, K, M and the tuner's `pick`) or from a decode
benchmark's JSON (bench/results/decode-*.json: `meta.tuned`, the picks its runner made).

    python3 bench/kernels/tuned_table.py bench/results/kernels-2026-11-29-v5.json \
        bench/results/kernels-2026-11-29-tc.json [--dtype float16 --bits 4 --group 128] [--skip-m 4]
    python3 bench/kernels/tuned_table.py bench/results/decode-2026-11-30-final.json --bits 3 --add

(--add keeps the existing table's entries of other dtypes, bits or groups: one table holds int4 and int3;
--merge keeps every existing entry the files do not replace, e.g. a retune of some shapes:
    python3 bench/kernels/tuned_table.py bench/results/kernels-2026-11-30-s8-gemv.json --merge)

Later files override earlier ones for the same (dtype, m bucket, n, k, bits, group). All files must come from
the same device. The benchmarks time asymmetric fp16 weights; the picks are used for any zero-point and
act-order setting (the kernels take both; the tuner's guard still checks a shipped pick before using it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "workers"))

from inlaid_worker.kernels.qmm_tuned import TUNED_DIR, config_to_dict, device_slug  # noqa: E402
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, m_bucket  # noqa: E402

_PICK = re.compile(r"QMMConfig\((.*)\)")


def parse_pick(text: str) -> QMMConfig:
    """QMMConfig's repr back into a QMMConfig."""
    m = _PICK.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a QMMConfig repr: {text!r}")
    fields: dict[str, object] = {}
    for part in m.group(1).split(", "):
        name, raw = part.split("=", 1)
        fields[name] = raw.strip("'") if raw.startswith("'") else raw == "True" if raw in ("True", "False") else int(raw)
    return QMMConfig(**fields)  # type: ignore[arg-type]


def build(files: list[Path], dtype: str, bits: int, group: int, skip_m: tuple[int, ...] = ()) -> dict:
    entries: dict[tuple, dict] = {}
    devices = set()
    for f in files:
        doc = json.loads(f.read_text())
        devices.add(doc["meta"]["device"])
        for row in doc.get("bench") or doc["meta"].get("tuned", []):
            if (row.get("dtype", dtype), row.get("bits", bits), row.get("group", group)) != (dtype, bits, group):
                continue
            key = (dtype, m_bucket(int(row["M"])), int(row["N"]), int(row["K"]), bits, group)
            if key[1] in skip_m or not row.get("pick"):
                continue
            us = row.get("pick_us")
            entries[key] = {
                "dtype": dtype, "m_bucket": key[1], "n": key[2], "k": key[3], "bits": bits, "group": group,
                "config": config_to_dict(parse_pick(row["pick"])), "us": None if us is None else round(float(us), 2),
                "from": f.name, "shape": row.get("shape", ""),
            }
    if len(devices) != 1:
        raise SystemExit(f"files come from {len(devices)} devices: {sorted(devices)}")
    return {"device": devices.pop(), "sources": [f.name for f in files],
            "entries": [entries[k] for k in sorted(entries)]}


def merged(old: dict, new: dict, replaced: tuple[str, int, int]) -> dict:
    """`new` plus the entries of `old` (same device) whose (dtype, bits, group) is not `replaced`."""
    if old["device"] != new["device"]:
        raise SystemExit(f"the existing table is for {old['device']}, these files for {new['device']}")
    kept = [e for e in old["entries"] if (e["dtype"], e["bits"], e["group"]) != replaced]
    order = lambda e: (e["dtype"], e["m_bucket"], e["n"], e["k"], e["bits"], e["group"])  # noqa: E731
    return {"device": new["device"], "sources": old["sources"] + [f for f in new["sources"] if f not in old["sources"]],
            "entries": sorted(kept + new["entries"], key=order)}


def merged_keep(old: dict, new: dict) -> dict:
    """`new` plus every entry of `old` (same device) that `new` does not replace (same dtype, m bucket, n, k, bits,
    group)."""
    if old["device"] != new["device"]:
        raise SystemExit(f"the existing table is for {old['device']}, these files for {new['device']}")
    key = lambda e: (e["dtype"], e["m_bucket"], e["n"], e["k"], e["bits"], e["group"])  # noqa: E731
    fresh = {key(e) for e in new["entries"]}
    kept = [e for e in old["entries"] if key(e) not in fresh]
    return {"device": new["device"], "sources": old["sources"] + [f for f in new["sources"] if f not in old["sources"]],
            "entries": sorted(kept + new["entries"], key=key)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--dest", type=Path, default=TUNED_DIR)
    ap.add_argument("--skip-m", type=int, nargs="*", default=[], help="batch buckets to leave to the tuner")
    ap.add_argument("--add", action="store_true", help="keep the existing table's entries of other dtype/bits/group")
    ap.add_argument("--merge", action="store_true", help="keep every existing entry the files do not replace")
    a = ap.parse_args()
    table = build(a.files, a.dtype, a.bits, a.group, tuple(a.skip_m))
    a.dest.mkdir(parents=True, exist_ok=True)
    out = a.dest / f"{device_slug(table['device'])}.json"
    if a.merge and out.exists():
        table = merged_keep(json.loads(out.read_text()), table)
    elif a.add and out.exists():
        table = merged(json.loads(out.read_text()), table, (a.dtype, a.bits, a.group))
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{out}: {len(table['entries'])} picks from {', '.join(table['sources'])}")


if __name__ == "__main__":
    main()
