"""Historical: it ran with TCSXK_PLANS at buckets 128 and 256; after the run the tuner kept bucket 256 only (tcsxk lost at
every M = 128 point), so its M = 128 tcsxk rows now find no candidates.

Session 19, helper H2 (issue 4, large batches): where quant_tcsx's time goes at M = 128 / 256 and the stream-K grid
("tcsxk", quant_tcsxk) against the shipped picks and bf16 cuBLAS, one device call (s19_bigm.sh):

  check   one process per tcsxk variant (stages 4 / 5; one program an SM) over POINTS: relative error against
          tcs_reference(acc_scale=True) (<= 5e-4) and the dequantized fp32 product (the tuner's guard, <= 1e-2), PDL off
          and on, STRESS more single launches, workspace clean; extra cases: M below the bucket (masked rows), bf16 x,
          act-order (through quant_matmul's dispatcher, pre-pass included). A "warm" process compiles the shipped picks
          and the ablation kernels (the Triton cache is shared, so the timing phase does not compile).
  bench   per point: bf16 cuBLAS, the shipped pick and the tcsxk candidates through the dispatcher (pre-pass included),
          iso and under PDL (CUDA graph over rotating weight copies > 3x L2, median of 10 replays: s17_tcsx's protocol);
          then x permuted once outside the graph: the shipped tcsx kernel alone (if tcsx), and quant_tcsxk's ablations
          (tcsxk_diag.py: the variant with DIAG / ORDER) on both grids (P = tiles: one program a tile = quant_tcsx's
          split-1 grid; P = SMs: stream-K): DIAG 0 (full), 1 (no dequantization), 2 (the ring's stream alone), 3 (no
          per-tile scaling).
  report  markdown + JSON with the roofline (2 M N K / 989 TFLOP/s dense bf16) and ship rows (tuned_table's format:
          best tcsxk >= SHIP_MIN x the shipped pick, iso AND under PDL).
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s19_bigm.py {check,bench,report} --out DIR ...
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels import pdl, qmm_tuned
from inlaid_worker.kernels.quant_matmul_config import TCSXK_PLANS, QMMConfig, m_bucket
from s17_tcsx import _f, read_checks, ship_rows

# (name, K, N, M): the brief's three points first, then the other decode shapes at M = 256 / 128
POINTS = [
    ("7B gate/up 4096x22016", 4096, 22016, 256),
    ("13B o 5120x5120", 5120, 5120, 256),
    ("7B o 4096x4096", 4096, 4096, 128),
    ("7B up 4096x11008", 4096, 11008, 256),
    ("7B qkv 4096x12288", 4096, 12288, 256),
    ("7B down 11008x4096", 11008, 4096, 256),
    ("13B gate/up 5120x27648", 5120, 27648, 256),
    ("13B qkv 5120x15360", 5120, 15360, 256),
    ("13B down 13824x5120", 13824, 5120, 256),
    ("7B o 4096x4096", 4096, 4096, 256),
    ("13B o 5120x5120", 5120, 5120, 128),
    ("7B gate/up 4096x22016", 4096, 22016, 128),
    ("7B up 4096x11008", 4096, 11008, 128),
    ("7B down 11008x4096", 11008, 4096, 128),
]
if os.environ.get("S19_POINTS"):
    POINTS = POINTS[: int(os.environ["S19_POINTS"])]
STRESS = int(os.environ.get("S19_STRESS", "4"))
GUARD, MODEL_TOL, MODEL_TOL_BF16 = 1e-2, 5e-4, 4e-3  # (bf16: the GPU tests' tolerance against tcs_reference)
SHIP_MIN = 1.03
PEAK_TFLOPS = 989.0  # H200 dense bf16 / fp16 tensor peak (the H100 SXM figure; same SMs and clocks)
# extra check cases (name, K, N, M, dtype, act): masked rows, bf16 x, act-order
EXTRA = [("7B o 4096x4096", 4096, 4096, 100, torch.float16, False), ("13B o 5120x5120", 5120, 5120, 200,
         torch.float16, False), ("7B o 4096x4096", 4096, 4096, 128, torch.bfloat16, False),
         ("7B up 4096x11008", 4096, 11008, 256, torch.float16, True)]  # fmt: skip
SHARDS = ["tcsxk", "tcsxks", "warm0", "warm1"]
# kernel-alone ablations (label: grid "tiles" = one program a tile / "sk" = stream-K one an SM, order, slots, diag);
# diag 1 no dequantization, 2 the ring alone (then the fix-up stores), 3 no per-tile scaling, 4 the ring alone, no store
ABL = {"tiles o1": ("tiles", 1, 0, 0), "tiles o0": ("tiles", 0, 0, 0), "tiles o1 no dequant": ("tiles", 1, 0, 1),
       "tiles o1 no scaling": ("tiles", 1, 0, 3), "tiles o1 ring": ("tiles", 1, 0, 2),
       "sk o1 atomics": ("sk", 1, 0, 0), "sk o1 slots": ("sk", 1, 1, 0), "sk o0 slots": ("sk", 0, 1, 0),
       "sk o1 ring+atomics": ("sk", 1, 0, 2), "sk o1 ring+slots": ("sk", 1, 1, 2), "sk o1 ring no store": ("sk", 1, 0, 4)}
# (run 1's table: order 0, atomics; its labels)
DIAG_NAMES = {0: "full", 1: "no dequant", 2: "ring alone", 3: "no tile scaling"}


def tcsxk_cands(m: int) -> list[QMMConfig]:
    return [QMMConfig(bm, bn, 128, 1, 4, st, True, kind) for bm, bn, st in TCSXK_PLANS.get(m_bucket(m), ())
            for kind in ("tcsxk", "tcsxks")]  # fmt: skip


def shipped(k: int, n: int, m: int) -> QMMConfig | None:
    return qmm_tuned.load_table("nvidia-h200").get(("float16", m_bucket(m), n, k, 4, 128))


def run(x: torch.Tensor, w, c: QMMConfig, y: torch.Tensor) -> None:  # noqa: ANN001
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    launch_quant_matmul(x, w, c, y)


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    e = float((y.float() - ref).norm() / ref.norm())
    return e if e == e else float("inf")


def _weight(k: int, n: int, act: bool):  # noqa: ANN202
    from bench_kernels import random_gptq

    torch.manual_seed(0)
    return random_gptq(k, n, 4, act)


def check_case(f, shard: str, name: str, k: int, n: int, m: int, dt: torch.dtype, act: bool) -> None:  # noqa: ANN001
    import bench_kernels
    from bench_kernels import rel_err, workspace_clean
    from inlaid_worker.kernels.quant_tcs import tcs_reference

    cands = [c for c in tcsxk_cands(m) if c.kind == shard]
    if not cands:
        return
    bench_kernels._DENSE.clear()
    torch.cuda.empty_cache()
    w = _weight(k, n, act)
    torch.manual_seed(m)
    x = torch.randn(m, k, device="cuda").to(dt)
    model = tcs_reference(x, w, acc_scale=True)
    for c in cands:
        t0 = time.time()
        row: dict = dict(shape=name, M=m, dtype=str(dt), act=act, cfg=str(c))
        try:
            y = torch.full((m, n), float("nan"), device="cuda", dtype=dt)
            run(x, w, c, y)
            row.update(err=rel_err(x, w, y), model_err=_rel(y, model), clean=workspace_clean())
            with pdl.scope(1):
                y.fill_(float("nan"))
                run(x, w, c, y)
                row.update(err_pdl=rel_err(x, w, y), model_err_pdl=_rel(y, model), clean_pdl=workspace_clean())
            errs = []
            for _ in range(STRESS):
                y.fill_(float("nan"))
                run(x, w, c, y)
                errs.append(_rel(y, model))
            tol = MODEL_TOL_BF16 if dt == torch.bfloat16 else MODEL_TOL
            row.update(stress_worst=max(errs), stress_bad=sum(not (e <= tol) for e in errs),
                       clean_stress=workspace_clean())  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported, and the candidate is not timed
            row["error"] = repr(exc)[:600]
        f.write(json.dumps(row) + "\n")
        f.flush()
        print(f"[check {shard}] {name} M={m} {dt} act={act} {short_cfg(str(c))} "
              f"{row.get('model_err', row.get('error'))} {time.time() - t0:.1f}s", flush=True)  # fmt: skip


def warm(part: int) -> None:
    """Compile (and run once) every shipped pick, iso and under PDL (part 0), and half the ablation kernels each."""
    from inlaid_worker.kernels.quant_tcsx import tcsx_permute
    from inlaid_worker.kernels.quant_tcsxk import sm_count, tcsxk_plan
    from tcsxk_diag import launch_tcsxk_diag

    for name, k, n, m in POINTS:
        w = _weight(k, n, False)
        x = torch.randn(m, k, device="cuda").half()
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        c = shipped(k, n, m)
        for mode in (0, 1):
            try:
                if c is not None and part == 0:
                    with pdl.scope(mode):
                        run(x, w, c, y)
            except Exception as exc:  # noqa: BLE001
                print(f"[warm] {name} M={m} shipped {c}: {exc!r}"[:300], flush=True)
        xp = tcsx_permute(x, w)
        _, units, kt, _ = tcsxk_plan(m, n, k, 128, 2, 10**9)
        for i, (grid, order, slots, diag) in enumerate(ABL.values()):
            if i % 2 == part:
                progs = units // kt if grid == "tiles" else sm_count(x.device)
                launch_tcsxk_diag(xp, w, 128, 1, 4, 2, y, programs=progs, diag=diag, slots=bool(slots), order=order)
        torch.cuda.synchronize()
        print(f"[warm] {name} M={m} ok", flush=True)


def check(out: Path, shard: int) -> None:
    key = SHARDS[shard]
    if key.startswith("warm"):
        warm(int(key[-1]))
        return
    with (out / f"check-{key}.jsonl").open("w") as f:
        for name, k, n, m in POINTS:
            check_case(f, key, name, k, n, m, torch.float16, False)
        for case in EXTRA:
            check_case(f, key, *case)


def good(r: dict) -> bool:
    tol = MODEL_TOL_BF16 if r.get("dtype") == "torch.bfloat16" else MODEL_TOL
    return "error" not in r and all(r.get(a, 1) <= GUARD for a in ("err", "err_pdl")) and all(
        r.get(a, 1) <= tol for a in ("model_err", "model_err_pdl", "stress_worst")) and all(
        r.get(a, False) for a in ("clean", "clean_pdl", "clean_stress"))  # fmt: skip


def bench(out: Path) -> None:
    from bench_kernels import copies, gptq_bytes, time_pdl
    from device_common import bench_meta
    from inlaid_worker.kernels.quant_tcsx import launch_tcsx, tcsx_permute
    from inlaid_worker.kernels.quant_tcsxk import sm_count, tcsxk_plan
    from tcsxk_diag import launch_tcsxk_diag

    ok = {(r["shape"], r["M"], r["cfg"]) for r in read_checks(out) if good(r) and not r["act"]
          and r["dtype"] == "torch.float16"}  # fmt: skip
    meta = bench_meta()
    meta["sms"] = sm_count(torch.device("cuda"))
    rows: list[dict] = []
    doc = dict(meta=meta, bench=rows)
    t0 = time.time()

    timed = time_pdl

    for name, k, n, m in POINTS:
        ws = [_weight(k, n, False) for _ in range(copies(k * n / 2))]
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        x = torch.randn(m, k, device="cuda").half()
        xb = x.bfloat16()
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        row: dict = dict(shape=name, K=k, N=n, M=m, MB=gptq_bytes(ws[0]) / 1e6, tflop=2 * m * n * k / 1e12)
        row["bf16_us"] = timed([lambda w=w: xb @ w for w in wb], False)
        old = shipped(k, n, m)
        row["shipped"] = str(old)
        try:
            calls = [lambda w=w: run(x, w, old, y) for w in ws]
            row["shipped_iso_us"], row["shipped_pdl_us"] = timed(calls, False), timed(calls, True)
        except Exception as exc:  # noqa: BLE001
            row["shipped_error"] = repr(exc)[:300]
        cands = []
        for c in tcsxk_cands(m):
            if (name, m, str(c)) not in ok:
                continue
            calls = [lambda w=w, c=c: run(x, w, c, y) for w in ws]
            cands.append((str(c), timed(calls, False), timed(calls, True)))
        row["cands"] = cands
        if cands:
            row["best"], row["best_iso_us"], row["best_pdl_us"] = min(cands, key=lambda t: t[1] + t[2])
        xp = tcsx_permute(x, ws[0])
        row["prepass_us"] = timed([lambda: tcsx_permute(x, ws[0]) for _ in ws], False)
        if old is not None and old.kind in ("tcsx", "tcsx2"):
            calls = [lambda w=w: launch_tcsx(x, w, old.block_m, old.split_k, old.num_stages, old.block_n // 64, y,
                                             old.kind, xp=xp) for w in ws]  # fmt: skip
            row["shipped_kernel_iso_us"] = timed(calls, False)
        _, units, kt, _ = tcsxk_plan(m, n, k, 128, 2, 10**9)
        row["tiles"], row["k_tiles"] = units // kt, kt
        abl = {}
        if (name, m) in {(p[0], p[3]) for p in POINTS[:3]} or m == 256:
            for label, (grid, order, slots, diag) in ABL.items():
                progs = units // kt if grid == "tiles" else meta["sms"]
                calls = [lambda w=w, p=progs, o=order, s=slots, d=diag: launch_tcsxk_diag(
                    xp, w, 128, 1, 4, 2, y, programs=p, diag=d, slots=bool(s), order=o) for w in ws]  # fmt: skip
                abl[label] = timed(calls, False)
        row["ablation_iso_us"] = abl
        rows.append(row)
        print(json.dumps({a: v for a, v in row.items() if a != "cands"}), f"{time.time() - t0:.0f}s", flush=True)
        tmp = out / "bench.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, out / "bench.json")
        del ws, wb
        torch.cuda.empty_cache()


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    checks = read_checks(out)
    path = out / "bench.json"
    doc = json.loads(path.read_text()) if path.exists() else dict(meta={}, bench=[])
    meta, rows = doc["meta"], doc["bench"]

    def roof(r: dict, us: float | None) -> str:
        return "-" if not us else f"{100 * r['tflop'] / PEAK_TFLOPS * 1e6 / us:.0f}%"

    md = [f"# Session 19 (helper H2): tcsx at M = 128 / 256, where the time goes, and the stream-K grid (tcsxk), "
          f"{meta.get('date', '')}", "", *report_head(meta, command),
          f"- SMs: {meta.get('sms')}; times: us per GEMM call, CUDA graph over rotating weight copies (> 3x L2), median "
          "of 10 replays; iso = plain launches, pdl = under PDL (kernels.pdl mode 1); shipped / tcsxk = through "
          "quant_matmul's dispatcher (tcsx / tcsxk / tcl: pre-pass x -> operand order included)",
          f"- roofline: 2 M N K / {PEAK_TFLOPS:.0f} TFLOP/s (dense bf16 / fp16 tensor peak); '% peak' = that time / "
          "the kernel's", "",
          "## Shipped pick vs tcsxk (best of least iso + pdl)", "",
          "| shape | M | ideal (peak) | bf16 cuBLAS (% peak) | shipped | shipped iso / pdl (% peak) | vs bf16 | tcsxk "
          "| tcsxk iso / pdl (% peak) | vs bf16 | speed-up iso / pdl |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        si, sp, bi, bp, b = (r.get(f) for f in ("shipped_iso_us", "shipped_pdl_us", "best_iso_us", "best_pdl_us",
                                                 "bf16_us"))  # fmt: skip
        ideal = r["tflop"] / PEAK_TFLOPS * 1e6
        sup = f"{si / bi:.3f} / {sp / bp:.3f}" if si and sp and bi and bp else "-"
        md.append(f"| {r['shape']} | {r['M']} | {ideal:.2f} | {_f(b)} ({roof(r, b)}) | {short_cfg(r['shipped'], False)} "
                  f"| {_f(si)} / {_f(sp)} ({roof(r, si)}) | {_f(b / si if b and si else None, '{:.2f}x')} | "
                  f"{short_cfg(r.get('best'), False)} | {_f(bi)} / {_f(bp)} ({roof(r, bi)}) | "
                  f"{_f(b / bi if b and bi else None, '{:.2f}x')} | {sup} |")  # fmt: skip
    labels = sorted({lb for r in rows for lb in r.get("ablation_iso_us", {})},
                    key=lambda lb: (list(ABL) + [f"{g} {d}" for g in ("tiles", "stream-K") for d in DIAG_NAMES.values()]
                                    ).index(lb))  # fmt: skip
    md += ["", "## Where the time goes (kernel alone, x permuted outside the graph, iso us)", "",
           "tiles: one program a 128 x 128 tile (quant_tcsx's split-1 grid, its structure); sk: stream-K, one program "
           "an SM; o1: column tiles fastest (quant_tcsx's order), o0: a column tile's row blocks side by side; "
           "atomics / slots: how shared tiles are summed. Ablations (wrong results): no dequant = the words bitcast "
           "to the operand; ring = TMA words + x through the ring, no reads / operand / wgmma (then the stores); ring "
           "no store = without them; no scaling = the wgmma accumulates (no fp32 part x scale a tile).", "",
           "| shape | M | tiles x K tiles | shipped kernel alone | " + " | ".join(labels) + " |",
           "|---|---|---|---|" + "---|" * len(labels)]  # fmt: skip
    for r in rows:
        a = r.get("ablation_iso_us", {})
        if not a:
            continue
        md.append(f"| {r['shape']} | {r['M']} | {r.get('tiles')} x {r.get('k_tiles')} | "
                  f"{_f(r.get('shipped_kernel_iso_us'))} | " + " | ".join(_f(a.get(lb)) for lb in labels) + " |")
    ship = ship_rows(rows, TCSXK_PLANS)
    md += ["", f"## Ship rows (tcsxk >= {SHIP_MIN}x the shipped pick iso AND pdl)", "",
           "| shape | M | old pick | old iso / pdl | new pick | new iso / pdl | speed-up iso / pdl |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in ship:
        md.append(f"| {s['shape']} | {s['M']} | {short_cfg(s['before'], False)} | {s['before_iso_us']:.2f} / "
                  f"{s['before_us']:.2f} | {short_cfg(s['pick'], False)} | {s['pick_iso_us']:.2f} / {s['pick_us']:.2f} "
                  f"| {s['before_iso_us'] / s['pick_iso_us']:.3f} / {s['before_us'] / s['pick_us']:.3f} |")  # fmt: skip
    if not ship:
        md.append("| (none) | | | | | | |")
    md += ["", "## Every tcsxk candidate (iso / pdl us)", "", "| shape | M | candidate | iso | pdl |",
           "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for c, i, p in r.get("cands", []):
            md.append(f"| {r['shape']} | {r['M']} | {short_cfg(c, False)} | {i:.2f} | {p:.2f} |")
    bad = [c for c in checks if not good(c)]
    md += ["", "## Check", "",
           f"- tcsxk cases checked: {len(checks)} (fp16 / bf16, masked rows, act-order through the dispatcher); "
           f"failed: {len(bad)}",
           f"- worst error vs tcs_reference(acc_scale=True) (off / on / stress): "
           f"{max((c.get('model_err', 0) for c in checks if 'error' not in c), default=float('nan')):.2e} / "
           f"{max((c.get('model_err_pdl', 0) for c in checks if 'error' not in c), default=float('nan')):.2e} / "
           f"{max((c.get('stress_worst', 0) for c in checks if 'error' not in c), default=float('nan')):.2e}; worst "
           f"guard error {max((c.get('err', 0) for c in checks if 'error' not in c), default=float('nan')):.2e}; "
           f"stress launches off: {sum(c.get('stress_bad', 0) for c in checks)} of {STRESS * len(checks)}"]  # fmt: skip
    md += [f"- FAILED {c['shape']} M = {c['M']} {c.get('dtype')} act={c.get('act')} {short_cfg(c['cfg'], False)}: "
           + (c["error"][:300] if "error" in c else json.dumps({a: v for a, v in c.items() if a not in ("shape", "M",
                                                                                                       "cfg")}))
           for c in bad[:12]]  # fmt: skip
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), bench=rows, checks=checks))
    (dest / f"{stem}-ship.json").write_text(json.dumps(dict(meta=dict(meta, command=command), bench=ship), indent=1))


NCU_POINTS = POINTS[:3]  # profiled: bf16 cuBLAS, the shipped pick's kernel (x permuted outside), tcsxk stream-K
NCU_KEYS = ("gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
            "sm__cycles_active.avg", "smsp__cycles_active.avg", "sm__cycles_elapsed.avg.per_second",
            "pipe_tensor", "gmma", "smsp__issue_active.avg.pct", "smsp__inst_executed.sum",
            "dram__throughput.avg.pct", "lts__t_sectors_srcunit_tex_op_read.sum", "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum",
            "smsp__average_warp_latency_issue_stalled", "smsp__average_warps_issue_stalled", "warps_active.avg.per_cycle",
            "launch__registers", "launch__grid_size")  # fmt: skip


def ncu_run() -> None:
    """Under `ncu --profile-from-start off`: each case once (compiled and warmed first) between profiler start / stop."""
    from inlaid_worker.kernels.quant_tcl import launch_tcl
    from inlaid_worker.kernels.quant_tcsx import launch_tcsx, launch_tcsxk, tcsx_permute

    for name, k, n, m in NCU_POINTS:
        w = _weight(k, n, False)
        x = torch.randn(m, k, device="cuda").half()
        xb, wb = x.bfloat16(), torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        xp = tcsx_permute(x, w)
        old = shipped(k, n, m)
        cases = {"bf16 cuBLAS": lambda: xb @ wb, "tcsxk stream-K": lambda: launch_tcsxk(xp, w, 128, 1, 4, 2, y)}
        if old is not None and old.kind in ("tcsx", "tcsx2"):
            cases["shipped " + old.kind] = lambda: launch_tcsx(x, w, old.block_m, old.split_k, old.num_stages,
                                                               old.block_n // 64, y, old.kind, xp=xp)  # fmt: skip
        elif old is not None and old.kind.startswith("tcl"):
            from inlaid_worker.kernels.quant_matmul_config import TCL_KINDS

            cases["shipped " + old.kind] = lambda: launch_tcl(None, w, old.block_m, old.block_n, old.split_k,
                                                              old.num_warps, old.num_stages,
                                                              TCL_KINDS.index(old.kind), y, xp=xp)  # fmt: skip
        for label, fn in cases.items():
            try:
                fn()
                torch.cuda.synchronize()
                torch.cuda.profiler.start()
                fn()
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
                print(f"ran {name} M={m} {label}", flush=True)
            except Exception as exc:  # noqa: BLE001 - reported
                print(f"FAILED {name} M={m} {label} {exc!r}"[:300], flush=True)


def ncu_summary(raw_csv: Path) -> str:
    """Selected metrics (NCU_KEYS substrings) of every profiled kernel from ncu's raw CSV page, one column each."""
    import csv

    rows = list(csv.reader(raw_csv.open()))
    head, data = rows[0], [r for r in rows[2:] if r]
    cols = [i for i, h in enumerate(head) if any(key in h for key in NCU_KEYS) or h == "Kernel Name"]
    lines = []
    for r in data:
        lines.append(" ; ".join(f"{head[i]}={r[i]}" for i in cols if i < len(r) and r[i] not in ("", "n/a")))
    return "\n\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["ncu-run"]:
        ncu_run()
        return
    if sys.argv[1:2] == ["ncu-summary"]:
        print(ncu_summary(Path(sys.argv[2])))
        return
    ap = device_parser(("check", "bench"), "bash bench/kernels/s19_bigm.sh", "kernels-s19-bigm")
    ap.add_argument("--shard", type=int, default=0)
    run_phase(ap, dict(check=lambda a: check(a.out, a.shard), bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
