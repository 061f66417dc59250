"""[Record: needs bench/kernels/s16_big_xch.patch applied (X_CHUNK was not kept on main).]
Session 16b (issue 4, int4 GEMM at M = 17..64): quant_tcs's x staging depth at block_m 32 / 64.

Session 16 staged x with XCH = 2 (block_m 32) / 1 (block_m 64) tiles in flight per consumer warpgroup
(quant_tcs.X_CHUNK_16): at 7B up split 4, block_m 64, each warpgroup waits 4 serial L2 round trips for its x tiles
before its first wgmma. Here XCH = 4 at both (quant_tcs.X_CHUNK = WIDE; offline builds: no spills at the launch caps).

- check: every tcs candidate of buckets 32 / 64 (quant_matmul_config._tcs) at the 7B shapes with the WIDE staging,
  against the fp32 dequantized product, PDL off and on, workspace clean (s8_gemv.check's protocol).
- bench: per (shape, M): bf16 cuBLAS, the shipped pick with session 16's staging (= HEAD: "before"), every checked tcs
  candidate with session 16's staging ("x16") and with WIDE ("wide"), iso and under PDL, rotating weights
  (bench_kernels.time_rotated); and at 7B up the diagnosis of the best tcs config of each M: DIAG 1 (no x / scale / zero
  staging), 2 (no operand / MMA), 3 (neither: the ring's stream alone), both stagings (wrong results; time only).
- report: markdown + JSON, -ship.json (tuned_table.py's format: rows whose best wide candidate is >= 3% faster than
  "before" iso and under PDL) and -xchunk.json (the block_m whose wide staging is faster than session 16's in the
  median over the candidates, for s16_big_decode.py's "new" variant).
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_big.py {check,bench,report} --out DIR ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from inlaid_worker.kernels import pdl, quant_tcs
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, _tcs

SHAPES = {
    "7B qkv 4096x12288": (4096, 12288),
    "7B o 4096x4096": (4096, 4096),
    "7B gate/up 4096x22016": (4096, 22016),
    "7B down 11008x4096": (11008, 4096),
    "7B up 4096x11008": (4096, 11008),
    "13B qkv 5120x15360": (5120, 15360),
    "13B o 5120x5120": (5120, 5120),
    "13B gate/up 5120x27648": (5120, 27648),
    "13B down 13824x5120": (13824, 5120),
}
DEFAULT = "7B qkv 4096x12288,7B o 4096x4096,7B gate/up 4096x22016,7B down 11008x4096,7B up 4096x11008"
RUN_SHAPES = os.environ.get("S16_SHAPES", DEFAULT).split(",")  # checked
BENCH_SHAPES = os.environ.get("S16_BENCH_SHAPES", DEFAULT).split(",")  # timed (a subset of RUN_SHAPES)
MS = tuple(int(v) for v in os.environ.get("S16_MS", "32,64").split(","))
SPLITS = {32: (4, 6, 8, 11), 64: (4, 6, 8, 11, 16)}  # session 16's winners came from these (split 2 / 3 never won)
WIDE = {8: 4, 16: 4, 32: 4, 64: 4}
VARIANTS = {"x16": quant_tcs.X_CHUNK_16, "wide": WIDE}
TOL = 1e-2  # the tuner's guard


def use_chunk(chunk: dict) -> None:
    quant_tcs.X_CHUNK.clear()
    quant_tcs.X_CHUNK.update(chunk)


def shipped(k: int, n: int, m: int) -> QMMConfig | None:
    from inlaid_worker.kernels import qmm_tuned
    from inlaid_worker.kernels.quant_matmul_config import m_bucket

    return qmm_tuned.load_table("nvidia-h200").get(("float16", m_bucket(m), n, k, 4, 128))


def candidates(k: int, n: int, m: int) -> list[QMMConfig]:
    return [c for c in _tcs(m, n, k, 128) if c.split_k in SPLITS[m]]


def pairs() -> list[tuple[str, int]]:
    return [(s, m) for s in RUN_SHAPES for m in MS]


def check(out: Path, shard: int, shards: int) -> None:
    from bench_kernels import random_gptq, rel_err, workspace_clean
    from device_common import run_cfg

    use_chunk(WIDE)
    with (out / f"check-{shard}.jsonl").open("w") as f:
        for shape, m in pairs()[shard::shards]:
            k, n = SHAPES[shape]
            torch.manual_seed(m)
            w = random_gptq(k, n, 4, False)
            x = torch.randn(m, k, device="cuda").half()
            for c in candidates(k, n, m):
                row: dict = dict(shape=shape, M=m, cfg=str(c), variant="wide")
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
            if shape not in BENCH_SHAPES:
                continue
            # session 16's staging compiled here too (timing only: HEAD's kernels, checked in session 16)
            use_chunk(quant_tcs.X_CHUNK_16)
            for c in candidates(k, n, m):
                run_cfg(x, w, c)
            old = shipped(k, n, m)
            if old is not None:
                run_cfg(x, w, old)
            use_chunk(WIDE)
            torch.cuda.synchronize()
            print(f"[check {shard}] {shape} M={m} done", flush=True)


def passed(out: Path) -> dict[tuple[str, int], set[str]]:
    ok: dict[tuple[str, int], set[str]] = {}
    for p in sorted(out.glob("check-*.jsonl")):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r and r["err"] <= TOL and r["err_pdl"] <= TOL and r["clean"] and r["clean_pdl"]:
                ok.setdefault((r["shape"], r["M"]), set()).add(r["cfg"])
    return ok


def _timed(fns: list, use_pdl: bool) -> float:
    from bench_kernels import time_pdl

    return time_pdl(fns, use_pdl)


def _pair(x, ws, c, y) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    fns = [lambda w=w: launch_quant_matmul(x, w, c, y) for w in ws]
    return _timed(fns, False), _timed(fns, True)


def bench(out: Path) -> None:
    from bench_kernels import copies, gptq_bytes, random_gptq
    from device_common import bench_meta

    meta = bench_meta()
    ok = passed(out)
    rows: list[dict] = []
    diags: list[dict] = []
    doc = dict(meta=meta, bench=rows, diag=diags)
    t0 = time.time()
    for shape in BENCH_SHAPES:
        k, n = SHAPES[shape]
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        for m in MS:
            x = torch.randn(m, k, device="cuda").half()
            xb = x.bfloat16()
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            row: dict = dict(shape=shape, K=k, N=n, M=m, MB=gptq_bytes(ws[0]) / 1e6, dtype="float16", bits=4,
                             group=128)  # fmt: skip
            row["bf16_us"] = _timed([lambda w=w: xb @ w for w in wb], False)
            old = shipped(k, n, m)
            row["before"] = str(old)
            use_chunk(quant_tcs.X_CHUNK_16)
            if old is not None:
                row["before_iso_us"], row["before_us"] = _pair(x, ws, old, y)
            cands: dict[str, list] = {"x16": [], "wide": []}
            for c in candidates(k, n, m):
                if str(c) not in ok.get((shape, m), set()):
                    continue
                for var in ("x16", "wide"):
                    use_chunk(VARIANTS[var])
                    try:
                        cands[var].append((str(c), *_pair(x, ws, c, y)))
                    except Exception as exc:  # noqa: BLE001
                        print(f"timing failed {var} {c}: {exc!r}"[:300], flush=True)
            if old is not None and old.kind.startswith("tcs"):
                use_chunk(WIDE)
                row["before_wide_iso_us"], row["before_wide_us"] = _pair(x, ws, old, y)
            use_chunk(quant_tcs.X_CHUNK_16)
            row["cands"] = cands
            rows.append(row)
            brief = {a: (round(v, 2) if isinstance(v, float) else v) for a, v in row.items() if a != "cands"}
            best = {v: min(cs, key=lambda t: t[1] + t[2])[1:] if cs else None for v, cs in cands.items()}
            print(json.dumps(brief), "best x16 / wide (iso, pdl):", best, f"{time.time() - t0:.0f}s", flush=True)
            if shape == "7B up 4096x11008" and cands["wide"]:
                c = min(cands["wide"], key=lambda t: t[1] + t[2])[0]
                cfg = eval(c, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
                for var in ("x16", "wide"):
                    use_chunk(VARIANTS[var])
                    for d in (0, 1, 2, 3):
                        fns = [lambda w=w, d=d: quant_tcs.launch_tcs(x, w, cfg.block_m, cfg.split_k, cfg.num_stages,
                                                                     cfg.block_n // 64, y, cfg.kind, diag=d)
                               for w in ws]  # fmt: skip
                        diags.append(dict(M=m, cfg=c, variant=var, diag=d, iso_us=_timed(fns, False),
                                          pdl_us=_timed(fns, True)))  # fmt: skip
                        print("diag", json.dumps(diags[-1]), flush=True)
                use_chunk(quant_tcs.X_CHUNK_16)
            (out / "bench.json").write_text(json.dumps(doc, indent=1))
        del ws, wb
        torch.cuda.empty_cache()
    print(f"bench {time.time() - t0:.0f}s", flush=True)


def _short(c: str) -> str:
    cfg = eval(c, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
    return f"{cfg.kind} m{cfg.block_m} n{cfg.block_n} s{cfg.split_k} st{cfg.num_stages}"


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    doc = json.loads((out / "bench.json").read_text())
    meta, rows = doc["meta"], doc["bench"]
    bw = meta["copy_GBps"]

    def pct(r: dict, us: float) -> str:
        return f"{r['MB'] * 1e6 / (us * 1e-6) / 1e9 / bw * 100:.0f}%"

    lines = [f"# Session 16b: quant_tcs x staging depth at block_m 32 / 64 ({meta['date']}, {meta['device']})", "",
             f"Command: `{command}`; torch {meta['torch']}, triton {meta['triton']}, copy {bw:,.0f} GB/s. "
             "us iso / PDL. x16 = session 16's staging (XCH 2 / 1 tiles in flight at block_m 32 / 64), wide = XCH 4.",
             "", "| shape | M | bf16 | before (HEAD pick, x16) | best x16 tcs | best wide tcs (% copy, x bf16) | "
             "wide / x16 same config (median iso / pdl) | wide vs before iso / pdl |", "|---|---|---|---|---|---|---|---|"]
    ratios: dict[int, list[float]] = {}
    ship: list[dict] = []
    same: list[str] = []  # the pick stays, >= 3% faster with the wide staging alone
    for r in rows:
        c16 = {t[0]: t for t in r["cands"]["x16"]}
        cw = r["cands"]["wide"]
        if not cw:
            continue
        b16 = min(r["cands"]["x16"], key=lambda t: t[1] + t[2])
        bw_ = min(cw, key=lambda t: t[1] + t[2])
        ri = [t[1] / c16[t[0]][1] for t in cw if t[0] in c16]
        rp = [t[2] / c16[t[0]][2] for t in cw if t[0] in c16]
        ratios.setdefault(r["M"], []).extend(ri + rp)
        bi, bp = r.get("before_iso_us"), r.get("before_us")
        sp = f"{bi / bw_[1]:.3f} / {bp / bw_[2]:.3f}" if bi and bp else "-"
        lines.append(f"| {r['shape']} | {r['M']} | {r['bf16_us']:.2f} | {_short(r['before'])} {bi:.2f} / {bp:.2f} | "
                     f"{_short(b16[0])} {b16[1]:.2f} / {b16[2]:.2f} | {_short(bw_[0])} {bw_[1]:.2f} / {bw_[2]:.2f} "
                     f"({pct(r, bw_[1])} / {pct(r, bw_[2])}, {r['bf16_us'] / bw_[1]:.2f}x / {r['bf16_us'] / bw_[2]:.2f}x)"
                     f" | {statistics.median(ri):.3f} / {statistics.median(rp):.3f} | {sp} |")  # fmt: skip
        if bi and bp and bi >= 1.03 * bw_[1] and bp >= 1.03 * bw_[2] and bw_[0] == r["before"]:
            same.append(f"{r['shape']} M = {r['M']}")
        elif bi and bp and bi >= 1.03 * bw_[1] and bp >= 1.03 * bw_[2]:
            keep = {a: v for a, v in r.items() if a != "cands"}
            ship.append(dict(keep, pick=bw_[0], pick_iso_us=bw_[1], pick_us=bw_[2]))
    chunk = dict(quant_tcs.X_CHUNK_16)
    for m, rs in ratios.items():
        if rs and statistics.median(rs) < 1.0:
            chunk[m] = WIDE[m]
    lines += ["", "Median wide / x16 over every (config, mode): "
              + ", ".join(f"M = {m}: {statistics.median(v):.3f} ({len(v)})" for m, v in ratios.items())
              + f"; X_CHUNK for the decode A/B's new variant: {chunk}", ""]
    if doc.get("diag"):
        lines += ["Diagnosis at 7B up (DIAG 1: no staging, 2: no operand / MMA, 3: the ring alone; us iso / pdl):", "",
                  "| M | config | staging | full | no staging | no MMA | ring alone |", "|---|---|---|---|---|---|---|"]
        by: dict = {}
        for d in doc["diag"]:
            by.setdefault((d["M"], d["cfg"], d["variant"]), {})[d["diag"]] = d
        for (m, c, var), ds in by.items():
            cells = " | ".join(f"{ds[i]['iso_us']:.2f} / {ds[i]['pdl_us']:.2f}" if i in ds else "-" for i in range(4))
            lines.append(f"| {m} | {_short(c)} | {var} | {cells} |")
    lines += ["", f"Ship rows (best wide >= 3% faster than before iso and pdl): {len(ship)}"]
    lines += [f"- {r['shape']} M = {r['M']}: {_short(r['before'])} -> {_short(r['pick'])}" for r in ship]
    lines += [f"Same pick, >= 3% faster both ways with the wide staging alone: {', '.join(same) or 'none'}"]
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (dest / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    meta = dict(meta, command=command)
    (dest / f"{stem}-ship.json").write_text(json.dumps(dict(meta=meta, bench=ship), indent=1))
    (dest / f"{stem}-xchunk.json").write_text(json.dumps({str(k): v for k, v in chunk.items()}))
    print("\n".join(lines), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("check", "bench", "report"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--dest", type=Path)
    ap.add_argument("--stem", default="kernels-2026-12-01-s16-big")
    ap.add_argument("--command", default="")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.what == "check":
        check(a.out, a.shard, a.shards)
    elif a.what == "bench":
        bench(a.out)
    else:
        report(a.out, a.dest or a.out, a.command, a.stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
