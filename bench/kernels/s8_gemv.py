"""Session 8 (helper GV): retune the 7B decode GEMVs at M = 1..16 with today's candidates, the finish epilogue
(kinds ending in "f": red-only split-K partials + quant_common.finish_rows) against today's store_tile, and GEMV
bandwidth in decode-like chains under PDL. One device call (bench/kernels/s8_gemv.sh):

  check   (parallel shards) every candidate of each (shape, M) run once with PDL off and once inside pdl.scope(1):
          relative error against the fp32 product of the dequantized weight, workspace and counters clean after
          (this also fills Triton's cache for the timing phase)
  bench   (alone) per shape and M: bf16 cuBLAS, then every candidate that passed the check, timed twice over
          rotating weight copies (> 3x L2) in one CUDA graph: "iso" = PDL off (the README's kernel-table definition),
          "pdl" = the same graph captured in pdl.scope(1) (back-to-back launches of one shape over distinct weights,
          each overlapping the previous one's tail, as in the decode graphs). The new pick is the fastest "pdl"
          time; "before" is the shipped table's pick (tuned/nvidia-h200.json at HEAD).
          chains (PDL on, one graph, distinct weights, 32 layers): "up/down" = 32 x (4096x11008, 11008x4096);
          "layer" = 32 x (qkv, o, gate/up, down) with the old and the new picks; bf16 cuBLAS in the same chains.
  report  markdown + JSON (rows in tuned_table.py's format: N, K, M, pick, pick_us)
The 2026-11-30 run offered the finish kinds through quant_matmul_config.HGEMVR_PLANS (removed since: slower);
FINISH_TWINS now adds them here (one more than that run timed: hgemvrf with 3 K tiles per program at M <= 2).
Times in us per GEMV call; % of copy = packed bytes (words + scales + zeros) / time / measured copy bandwidth.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s8_gemv.py {check,bench,report} --out DIR
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels import pdl, qmm_tuned
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, candidate_configs, m_bucket

SHAPES = {  # name: (K, N); the decode step's four (gate/up fused) and the goals' up shape
    "7B qkv 4096x12288": (4096, 12288),
    "7B o 4096x4096": (4096, 4096),
    "7B gate/up 4096x22016": (4096, 22016),
    "7B down 11008x4096": (11008, 4096),
    "7B up 4096x11008": (4096, 11008),
}
MS = (1, 2, 4, 8, 16)
LAYERS = 32
TOL = 1e-2  # the tuner's guard


def shipped(k: int, n: int, m: int) -> QMMConfig | None:
    table = qmm_tuned.load_table("nvidia-h200")
    return table.get(("float16", m_bucket(m), n, k, 4, 128))


FINISH_TWINS = {"hgemvr": "hgemvrf", "hgemvrq": "hgemvrqf", "hgemvrb": "hgemvrbf"}


def candidates(k: int, n: int, m: int) -> list[QMMConfig]:
    """Today's hgemvr / tensor-core candidates (quant_matmul_config), the finish-epilogue twin of each hgemvr plan
    (kinds "...f": not tuner candidates since this run) and the shipped pick ("before")."""
    out = [c for c in candidate_configs(m, n, k, 128, 4, torch.float16) if c.kind.startswith(("hgemvr", "tc"))]
    out += [dataclasses.replace(c, kind=FINISH_TWINS[c.kind]) for c in out if c.kind in FINISH_TWINS]
    old = shipped(k, n, m)
    if old is not None and old not in out:
        out.append(old)
    return out


def pairs() -> list[tuple[str, int]]:
    return [(s, m) for s in SHAPES for m in MS]


def _gpu():
    from bench_kernels import random_gptq, rel_err, workspace_clean
    from device_common import run_cfg

    return random_gptq, rel_err, workspace_clean, run_cfg


def check(out: Path, shard: int, shards: int) -> None:
    random_gptq, rel_err, workspace_clean, run_cfg = _gpu()
    with (out / f"check-{shard}.jsonl").open("w") as f:
        for shape, m in pairs()[shard::shards]:
            k, n = SHAPES[shape]
            torch.manual_seed(m)
            w = random_gptq(k, n, 4, False)
            x = torch.randn(m, k, device="cuda").half()
            for c in candidates(k, n, m):
                t0 = time.time()
                row: dict = dict(shape=shape, M=m, cfg=str(c))
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
                print(f"[check {shard}] {shape} M={m} {short_cfg(str(c))} {row.get('err', row.get('error'))} "
                      f"{time.time() - t0:.1f}s", flush=True)  # fmt: skip


def passed(out: Path) -> dict[tuple[str, int], set[str]]:
    """(shape, M) -> the configs whose check ran clean within the guard's tolerance (PDL off and on)."""
    ok: dict[tuple[str, int], set[str]] = {}
    for p in sorted(out.glob("check-*.jsonl")):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            good = "error" not in r and r["err"] <= TOL and r["err_pdl"] <= TOL and r["clean"] and r["clean_pdl"]
            if good:
                ok.setdefault((r["shape"], r["M"]), set()).add(r["cfg"])
    return ok


def _calls(xs: torch.Tensor, ws: list, c: QMMConfig, ys: torch.Tensor) -> list:
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    return [lambda w=w: launch_quant_matmul(xs, w, c, ys) for w in ws]


def _timed(calls: list, use_pdl: bool) -> float:
    from bench_kernels import time_pdl

    return time_pdl(calls, use_pdl)


def bench(out: Path) -> None:
    from bench_kernels import copies, gptq_bytes, random_gptq
    from device_common import bench_meta

    meta = bench_meta()
    meta["pdl_supported"] = pdl.supported()
    ok = passed(out)
    rows: list[dict] = []
    doc = dict(meta=meta, bench=rows, chains=[])
    t0 = time.time()
    for shape, (k, n) in SHAPES.items():
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        nbytes = gptq_bytes(ws[0])
        for m in MS:
            x = torch.randn(m, k, device="cuda").half()
            xb = x.bfloat16()
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            row: dict = dict(shape=shape, K=k, N=n, M=m, MB=nbytes / 1e6, dtype="float16", bits=4, group=128)
            row["bf16_us"] = _timed([lambda w=w: xb @ w for w in wb], False)
            old = shipped(k, n, m)
            row["before"] = str(old)
            times = []
            for c in candidates(k, n, m):
                if str(c) not in ok.get((shape, m), set()):
                    continue
                try:
                    iso = _timed(_calls(x, ws, c, y), False)
                    on = _timed(_calls(x, ws, c, y), True)
                except Exception as exc:  # noqa: BLE001
                    print(f"timing failed {c}: {exc!r}"[:300], flush=True)
                    continue
                times.append((str(c), iso, on))
            row["cands"] = times
            if times:
                best = min(times, key=lambda t: t[2])
                row["pick"], row["pick_iso_us"], row["pick_us"] = best
                row["best_iso"] = min(times, key=lambda t: t[1])[:2]
                by = {t[0]: t for t in times}
                if str(old) in by:
                    row["before_iso_us"], row["before_us"] = by[str(old)][1:]
            rows.append(row)
            print(json.dumps({a: v for a, v in row.items() if a != "cands"}), f"{time.time() - t0:.0f}s", flush=True)
            (out / "bench.json").write_text(json.dumps(doc, indent=1))
        del ws, wb
        torch.cuda.empty_cache()
    chains(out, doc, rows)


def _chain_weights(names: list[str]) -> tuple[list, list]:
    from bench_kernels import random_gptq

    q = [[random_gptq(*SHAPES[s], 4, False) for s in names] for _ in range(LAYERS)]
    b = [[torch.randn(*SHAPES[s], device="cuda", dtype=torch.bfloat16) for s in names] for _ in range(LAYERS)]
    return q, b


CHAINS = (("up/down", ["7B up 4096x11008", "7B down 11008x4096"]),
          ("layer", ["7B qkv 4096x12288", "7B o 4096x4096", "7B gate/up 4096x22016", "7B down 11008x4096"]))
"""The decode-like chains (label, shapes of one layer), each LAYERS layers of distinct weights."""


def time_chains(out: Path, doc: dict, variants_of: Callable[[str, int, list[str]], dict[str, list]]) -> None:
    """Each chain at each M: bf16 cuBLAS, then each variant `variants_of(label, M, shapes)` gives (name -> one config
    repr per shape; a variant with a missing config is left out), under PDL and plainly; into doc["chains"]."""
    from bench_kernels import gptq_bytes
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    for label, names in CHAINS:
        q, b = _chain_weights(names)
        nbytes = sum(gptq_bytes(w) for w in q[0])
        for m in MS:
            xs = {s: torch.randn(m, SHAPES[s][0], device="cuda").half() for s in names}
            ys = {s: torch.empty(m, SHAPES[s][1], device="cuda", dtype=torch.float16) for s in names}
            xb = {s: v.bfloat16() for s, v in xs.items()}
            rec: dict = dict(chain=label, M=m, layers=LAYERS, MB_per_layer=nbytes / 1e6)
            rec["bf16_us"] = _timed([lambda w=w, s=s: xb[s] @ w for layer in b for s, w in zip(names, layer)], False)
            for var, cfgs in variants_of(label, m, names).items():
                if any(c in (None, "None") for c in cfgs):
                    continue
                cs = [eval(c, {"QMMConfig": QMMConfig}) for c in cfgs]  # noqa: S307 - our own repr
                calls = [lambda w=w, s=s, c=c: launch_quant_matmul(xs[s], w, c, ys[s])
                         for layer in q for s, w, c in zip(names, layer, cs)]  # fmt: skip
                rec[f"{var}_cfgs"] = cfgs
                rec[f"{var}_pdl_us"] = _timed(calls, True)
                rec[f"{var}_iso_us"] = _timed(calls, False)
            doc["chains"].append(rec)
            print(json.dumps(rec), flush=True)
            (out / "bench.json").write_text(json.dumps(doc, indent=1))
        del q, b
        torch.cuda.empty_cache()


def chains(out: Path, doc: dict, rows: list[dict]) -> None:
    """32-layer chains under PDL: up/down with the new picks (and their today's-epilogue twin), the decode layer with
    the old and the new picks; bf16 cuBLAS in the same chains."""
    pick = {(r["shape"], r["M"]): r for r in rows}

    def variants(label: str, m: int, names: list[str]) -> dict[str, list]:
        vs = {"new": [pick[(s, m)].get("pick") for s in names],
              "old": [pick[(s, m)].get("before") for s in names]}  # fmt: skip
        # ("old" is timed even where it equals "new": the pair shows the run's noise)
        if label == "up/down":  # the new picks with today's epilogue where they use the finish kernel
            twins = [_twin(pick[(s, m)]) for s in names]
            if twins != vs["new"]:
                vs["new-store_tile"] = twins
        return vs

    time_chains(out, doc, variants)


def _twin(row: dict) -> str | None:
    """The fastest (PDL) candidate of the row with today's store_tile epilogue (not a finish kind)."""
    keep = [t for t in row.get("cands", []) if "kind='hgemvr" not in t[0] or not t[0].endswith("f')")]
    return min(keep, key=lambda t: t[2])[0] if keep else None


def show(v: float | None, fmt: str = "{:.2f}") -> str:
    """A report cell: v formatted, "-" when missing."""
    return "-" if v is None else fmt.format(v)


def copy_pct(meta: dict) -> Callable[[float, float | None], str]:
    """(packed MB, us) -> that traffic's share of the machine's copy bandwidth ("-" when untimed)."""
    copy = meta["copy_GBps"] * 1e9

    def pct(mb: float, us: float | None) -> str:
        return "-" if not us else f"{100 * mb * 1e6 / (us * 1e-6) / copy:.0f}%"

    return pct


def retune_row(r: dict, pct: Callable[[float, float | None], str], kept: str = "") -> str:
    """One row of the report's retune table (`kept`: a note after the new pick)."""
    return (f"| {r['shape']} | {r['M']} | {show(r['bf16_us'])} | {short_cfg(r['before'], False)} | "
            f"{show(r.get('before_iso_us'))} / {show(r.get('before_us'))} | {short_cfg(r.get('pick'), False)}{kept} | "
            f"{show(r.get('pick_iso_us'))} / {show(r.get('pick_us'))} | {pct(r['MB'], r.get('pick_iso_us'))} / "
            f"{pct(r['MB'], r.get('pick_us'))} | "
            f"{show(r['bf16_us'] / r['pick_iso_us'] if r.get('pick_iso_us') else None)} / "
            f"{show(r['bf16_us'] / r['pick_us'] if r.get('pick_us') else None)} | "
            f"{short_cfg(r.get('pdl_pick'), False)} ({show(r.get('pdl_pick_iso_us'))} / {show(r.get('pdl_pick_us'))}) |")  # fmt: skip


def chain_table(
    chs: list[dict], variants: tuple[str, ...], pct: Callable[[float, float | None], str], note: str = ""
) -> list[str]:
    """The report's chains section: each chain's variants (those it has), per GEMV; `note` ends the heading."""
    md = ["", f"## Chains under PDL ({LAYERS} layers of distinct weights in one graph; us per GEMV = chain time / "
          f"GEMVs; % copy = the chain's packed bytes / chain time / copy bandwidth{note})", "",
          "| chain | M | bf16 per GEMV | variant | int4 per GEMV pdl (iso) | % copy pdl (iso) | x bf16 pdl (iso) | configs |",
          "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in chs:
        g = 2 if c["chain"] == "up/down" else 4
        for var in variants:
            if f"{var}_pdl_us" not in c:
                continue
            p, i = c[f"{var}_pdl_us"], c[f"{var}_iso_us"]
            mb = c["MB_per_layer"] / g
            cf = ", ".join(short_cfg(x, False) for x in c[f"{var}_cfgs"])
            md.append(f"| {c['chain']} | {c['M']} | {c['bf16_us']:.2f} | {var} | {p:.2f} ({i:.2f}) | {pct(mb, p)} ({pct(mb, i)}) | "
                      f"{c['bf16_us'] / p:.2f} ({c['bf16_us'] / i:.2f}) | {cf} |")  # fmt: skip
    return md


def read_checks(out: Path) -> list[dict]:
    """The check phase's records (check-*.jsonl), in shard order."""
    return [json.loads(line) for p in sorted(out.glob("check-*.jsonl")) for line in p.read_text().splitlines()]


def worst_err(checks: list[dict]) -> float:
    """The largest relative error (PDL off or on) of the checks that ran; nan if none did."""
    return max((max(c["err"], c["err_pdl"]) for c in checks), default=float("nan"))


def ship(row: dict) -> dict:
    """The row with `pick` = the shipped pick: the candidate with the least iso + pdl time (the fastest pdl time alone,
    kept as `pdl_pick`, favours configs that overlap a same-shape predecessor well but are slower on their own: e.g.
    down M = 2 hgemvrb s29, 15.2 us iso against 13.3 for the shipped hgemvr s15); non-finish kinds only."""
    out = dict(row)
    cands = [t for t in row.get("cands", []) if not any(f"kind='{f}'" in t[0] for f in FINISH_TWINS.values())]
    if cands:
        best = min(cands, key=lambda t: t[1] + t[2])
        out["pdl_pick"], out["pdl_pick_iso_us"], out["pdl_pick_us"] = row.get("pick"), row.get("pick_iso_us"), row.get("pick_us")
        out["pick"], out["pick_iso_us"], out["pick_us"] = best
    return out


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    doc = json.loads((out / "bench.json").read_text())
    meta, rows, chs = doc["meta"], [ship(r) for r in doc["bench"]], doc["chains"]
    pct = copy_pct(meta)

    md = [f"# Session 8 GEMV retune, finish epilogue, decode-like chains (helper GV), {meta.get('date', '')}", "",
          *report_head(meta, command),
          "- times: us per GEMV call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; "
          "iso = launched plainly (the README kernel table's definition), pdl = the same graph captured with PDL "
          "(kernels.pdl mode 1: each launch overlaps the previous kernel's tail, as in the decode graphs); "
          "% of copy = packed bytes / time / copy bandwidth; x bf16 = bf16 cuBLAS time (same harness, iso) / int4 time",
          "- candidates: today's hgemvr* / tc* candidates and the finish-epilogue twins of the hgemvr plans, each checked "
          "first (error vs the fp32 dequantized product <= 1e-2, workspace and counters clean, PDL off and on); before = "
          "the shipped table's pick at HEAD; new pick = the least iso + pdl time (s8_gemv.ship; no finish kinds), the "
          "pick written to the table; fastest pdl = the chains' \"new\" configs", "",
          "## Retune (per shape and M)", "",
          "| shape | M | bf16 | before | before iso / pdl | new pick | new iso / pdl | % copy (iso / pdl) | x bf16 (iso / pdl) | fastest pdl (iso / pdl) |",
          "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    md += [retune_row(r, pct) for r in rows]
    md += ["", "## Finish epilogue vs store_tile (same plan, M <= 4; iso / pdl us)", "",
           "| shape | M | plan | store_tile iso / pdl | finish iso / pdl | finish - store_tile (pdl) |", "|---|---|---|---|---|---|"]
    for r in rows:
        by = {c: (i, p) for c, i, p in r.get("cands", [])}
        plans = [c for c in sorted(by, key=lambda c: by[c][1]) if "kind='hgemvr" in c and not c.endswith("f')")
                 and c[:-2] + "f')" in by][:3]  # the three fastest store_tile plans (pdl) that have a finish twin
        for c in plans:
            i, p = by[c]
            fi, fp = by[c[:-2] + "f')"]  # its finish twin
            md.append(f"| {r['shape']} | {r['M']} | {short_cfg(c, False)} | {i:.2f} / {p:.2f} | {fi:.2f} / {fp:.2f} | "
                      f"{fp - p:+.2f} |")  # fmt: skip
    md += chain_table(chs, ("old", "new", "new-store_tile"), pct)
    checks = read_checks(out)
    if checks:
        ok = [c for c in checks if "error" not in c]
        fin = [c for c in ok if any(f"kind='{f}'" in c["cfg"] for f in FINISH_TWINS.values())]
        md += ["", "## Check (every timed candidate, PDL off and on)", "",
               f"- {len(checks)} candidates, {len(checks) - len(ok)} raised; worst relative error vs the fp32 dequantized "
               f"product {worst_err(ok):.2e} (finish kinds: {len(fin)}, worst {worst_err(fin):.2e}); workspace and counters clean "
               f"after every run: {all(c['clean'] and c['clean_pdl'] for c in ok)}"]  # fmt: skip
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), bench=rows, chains=chs))


def main() -> None:
    ap = device_parser(("check", "bench"), "bash bench/kernels/s8_gemv.sh", "kernels-2026-11-30-s8-gemv")
    ap.add_argument("--shard", type=int, default=0)  # (device_parser adds these only for a "guard" phase)
    ap.add_argument("--shards", type=int, default=1)
    run_phase(ap, dict(check=lambda a: check(a.out, a.shard, a.shards), bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
