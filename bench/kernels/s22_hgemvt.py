"""Session 22 (helper A): quant_hgemvt (TMA-ring GEMV, no split-K) vs the shipped hgemvr pick, bf16 cuBLAS and the
copy bandwidth, iso and PDL, M = 1, 2, 4 on the 7B up / down shapes; and the ring-read floor (s22_ring_floor.py).
Phases (one device call, bench/kernels/s22_hgemvt.sh):
  check   (shards) every hgemvt config of the sweep run once plainly and once in pdl.scope(1) on one weight per
          (shape, M, sym): relative error vs the fp32 product of the dequantized weight (bench_kernels.rel_err);
          the floor configs launched once (builds); the Triton cache is filled for the bench phase
  bench   copy bandwidth; per shape: the floor (iso / pdl), bf16 cuBLAS, hgemvr (the shipped pick through
          quant_matmul with INLAID_QMM_TUNED=1), every checked hgemvt config (iso / pdl), with errors from check
  report  markdown + JSON (--dest)
Times: us per call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays (bench_kernels.time_rotated);
pdl = the same graph captured in kernels.pdl.scope(1). % copy = (words + scales + zeros) / time / copy bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096)}
EXTRA = {"7B o 4096x4096": (4096, 4096), "7B qkv 4096x12288": (4096, 12288), "7B gate/up 4096x22016": (4096, 22016)}
MS = (1, 2, 4)


def sweep(n: int, k: int, m: int) -> list:
    from inlaid_worker.kernels.quant_hgemvt import HGEMVTConfig, config_ok, layout_params, plan

    out = []
    bcs = (8, 16, 32)
    warps = (2, 4) if m == 1 else (4,)
    for bc in bcs:
        for w in warps:
            tg = layout_params(bc, w)[3]
            gmin = max(tg * w, -(-64 // bc))
            for gb in (gmin, 2 * gmin) if m == 1 else (gmin,):
                box = plan(n, k, m, HGEMVTConfig(bc, gb, 1, w, 1)).box_bytes
                for kb in (64, 96) if m == 1 else (64,):
                    st = max(2, round(kb * 1024 / box))
                    while st > 2 and config_ok(n, k, m, HGEMVTConfig(bc, gb, st, w, 1)):
                        st -= 1
                    c = HGEMVTConfig(bc, gb, st, w, 1)
                    if config_ok(n, k, m, c) is None and c not in out:
                        out.append(c)
    if m == 1:  # two programs per SM, ~40 KB rings
        for bc, w in ((8, 4), (32, 4), (8, 2)):
            tg = layout_params(bc, w)[3]
            gb = max(tg * w, -(-64 // bc))
            box = plan(n, k, m, HGEMVTConfig(bc, gb, 1, w, 2)).box_bytes
            c = HGEMVTConfig(bc, gb, max(2, round(40 * 1024 / box)), w, 2)
            if config_ok(n, k, m, c) is None:
                out.append(c)
    return out


def extra_sweep(n: int, k: int) -> list:
    from inlaid_worker.kernels.quant_hgemvt import HGEMVTConfig, config_ok

    cs = [HGEMVTConfig(8, 16, 8, 4, 1), HGEMVTConfig(16, 8, 8, 4, 1), HGEMVTConfig(32, 4, 8, 4, 1),
          HGEMVTConfig(8, 8, 11, 2, 1)]  # fmt: skip
    return [c for c in cs if config_ok(n, k, 1, c) is None]


def next_sweep(n: int, k: int, m: int) -> list:
    """S22_SET=next (written after call 3, not run yet): no 32-byte box rows (bc 8) and no 2-warp programs (both lost
    everywhere in call 3), 8-warp programs added (the consumer was issue bound with 4), rings of ~32 / 64 KB (fewer
    stages were faster)."""
    from inlaid_worker.kernels.quant_hgemvt import HGEMVTConfig, config_ok, layout_params, plan

    out = []
    for bc in (16, 32):
        for w in (4, 8):
            gmin = max(layout_params(bc, w)[3] * w, -(-64 // bc))
            for gb in (gmin, 2 * gmin):
                box = plan(n, k, m, HGEMVTConfig(bc, gb, 1, w, 1)).box_bytes
                for kb in (32, 64) if m == 1 else (64,):
                    c = HGEMVTConfig(bc, gb, max(2, round(kb * 1024 / box)), w, 1)
                    if config_ok(n, k, m, c) is None and c not in out:
                        out.append(c)
    if m == 1:
        for w in (4, 8):
            gb = max(layout_params(32, w)[3] * w, 2)
            c = HGEMVTConfig(
                32, gb, max(2, round(33 * 1024 / plan(n, k, m, HGEMVTConfig(32, gb, 1, w, 2)).box_bytes)), w, 2
            )
            if config_ok(n, k, m, c) is None:
                out.append(c)
    return out


def b_sweep(n: int, k: int, m: int) -> list:
    """S22_SET=b (helper A2, the reworked kernel: 5-D layout, zeros without a layout conversion, NB constexpr,
    16-byte x build; ws = producer warp): one change at a time around bc 32 gb 8."""
    from inlaid_worker.kernels.quant_hgemvt import HGEMVTConfig as C
    from inlaid_worker.kernels.quant_hgemvt import config_ok

    if m == 1:
        cs = [C(32, 8, 4, 8, 2, 4, 0), C(32, 8, 4, 4, 2, 8, 0), C(32, 8, 6, 8, 1, 4, 0), C(32, 16, 3, 8, 1, 8, 0),
              C(32, 8, 4, 8, 1, 4, 1), C(32, 8, 6, 8, 1, 4, 1), C(32, 8, 4, 4, 1, 8, 1), C(32, 16, 3, 8, 1, 8, 1),
              C(32, 16, 3, 8, 1, 4, 1), C(64, 8, 3, 8, 1, 8, 1), C(32, 8, 4, 8, 2, 4, 1), C(32, 8, 6, 8, 1, 4, 1, 0)]  # fmt: skip
    elif m == 2:
        cs = [C(32, 8, 4, 8, 1, 4, 1), C(32, 8, 4, 8, 2, 4, 0), C(32, 16, 3, 8, 1, 8, 1)]
    else:
        cs = []
    return [c for c in cs if config_ok(n, k, m, c) is None]


# set b2 lifts the co-residency budget (config_ok / launch_hgemvt's coreside); the other sets keep the kernel's default
CORESIDE: bool | None = False if os.environ.get("S22_SET") == "b2" else None


def b2_sweep(n: int, k: int, m: int) -> list:
    """S22_SET=b2 (helper A2's call 2, M = 1): 4 consumer warps at 8 columns a thread (call 1's best) with deeper
    rings, 16 groups a box, two programs per SM; the co-residency budget lifted (SMEM_MAX) to see what it costs."""
    from inlaid_worker.kernels import quant_hgemvt as T

    C = T.HGEMVTConfig
    cs = [C(32, 8, 4, 4, 1, 8, 1), C(32, 8, 3, 4, 1, 8, 1), C(32, 8, 5, 4, 1, 8, 1), C(32, 8, 6, 4, 1, 8, 1),
          C(32, 8, 7, 4, 1, 8, 1), C(32, 16, 2, 4, 1, 8, 1), C(32, 16, 3, 4, 1, 8, 1)]  # fmt: skip
    if n > k:  # 7B up: 344 tiles, two programs per SM possible (down has 128 tiles: one program per SM anyway)
        cs += [C(32, 8, 4, 4, 2, 8, 1), C(32, 8, 3, 4, 2, 8, 1)]
    return [c for c in cs if m == 1 and T.config_ok(n, k, m, c, CORESIDE) is None]


def cases(extra: bool) -> list[tuple[str, int, int, int, object]]:
    out = []
    sets = dict(next=next_sweep, b=b_sweep, b2=b2_sweep)
    pick = sets.get(os.environ.get("S22_SET", ""), sweep)
    for name, (k, n) in SHAPES.items():
        for m in MS:
            out += [(name, k, n, m, c) for c in pick(n, k, m)]
    if extra:
        for name, (k, n) in EXTRA.items():
            out += [(name, k, n, 1, c) for c in extra_sweep(n, k)]
    return out


def check(a) -> None:
    from bench_kernels import rel_err
    from gemv_h200 import make_weight
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.quant_hgemvt import launch_hgemvt
    from s22_ring_floor import floor_configs, launch_read

    rows = []
    weights: dict = {}
    for idx, (name, k, n, m, c) in enumerate(cases(a.extra)):
        if idx % a.shards != a.shard:
            continue
        row = dict(shape=name, M=m, cfg=repr(c))
        try:
            for sym in (False, True) if idx % 3 == 0 else (False,):  # sym on a third of the configs (and the tests)
                key = (k, n, sym)
                if key not in weights:
                    torch.manual_seed(k + n + sym)
                    weights[key] = make_weight(k, n, 4, sym)
                w = weights[key]
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                launch_hgemvt(x, w, c, y, coreside=CORESIDE)
                row[f"err{'_sym' if sym else ''}"] = rel_err(x, w, y)
                y.fill_(float("nan"))
                with pdl.scope(1):
                    launch_hgemvt(x, w, c, y, coreside=CORESIDE)
                row[f"err_pdl{'_sym' if sym else ''}"] = rel_err(x, w, y)
        except Exception as exc:  # noqa: BLE001 - reported
            row["error"] = repr(exc)[:400]
        rows.append(row)
        print(f"[check {a.shard}] {json.dumps(row)}", flush=True)
    out = torch.zeros(512, dtype=torch.int32, device="cuda")
    for idx, c in enumerate(floor_configs(11008, 4096)):
        if idx % a.shards != a.shard:
            continue
        for k, n in SHAPES.values():
            key = (k, n, False)
            if key not in weights:
                weights[key] = make_weight(k, n, 4, False)
            try:
                launch_read(weights[key], c, out)
                with pdl.scope(1):
                    launch_read(weights[key], c, out)
                torch.cuda.synchronize()
            except Exception as exc:  # noqa: BLE001
                print(f"[check {a.shard}] floor {c} {exc!r}"[:300], flush=True)
    torch.cuda.synchronize()
    (a.out / f"check-{a.shard}.json").write_text(json.dumps(rows))


def timed(calls: list, use_pdl: bool) -> float:
    from bench_kernels import time_pdl

    return time_pdl(calls, use_pdl)


def bench(a) -> None:
    from bench_kernels import copies, gptq_bytes, rel_err
    from device_common import bench_meta
    from gemv_h200 import make_weight
    from inlaid_worker.kernels import quant_matmul_config
    from inlaid_worker.kernels.quant_hgemvt import HGEMVTConfig, launch_hgemvt, plan
    from inlaid_worker.kernels.quant_matmul import quant_matmul
    from s22_ring_floor import floor_configs, launch_read

    meta = bench_meta()
    meta["qmm_tuned"] = os.environ.get("INLAID_QMM_TUNED")
    checks = [r for p in sorted(a.out.glob("check-*.json")) for r in json.loads(p.read_text())]
    ok = {(r["shape"], r["M"], r["cfg"]): r for r in checks
          if "error" not in r and max(r["err"], r["err_pdl"], r.get("err_sym", 0), r.get("err_pdl_sym", 0)) < 1e-2}  # fmt: skip
    rows: list[dict] = []
    t0 = time.time()

    def keep(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), f"{time.time() - t0:.0f}s", flush=True)
        (a.out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))

    shapes = dict(SHAPES, **(EXTRA if a.extra else {}))
    out = torch.zeros(512, dtype=torch.int32, device="cuda")
    for name, (k, n) in shapes.items():
        ws = [make_weight(k, n, 4, False) for _ in range(copies(k * n / 2))]
        mb = gptq_bytes(ws[0]) / 1e6
        base = dict(shape=name, K=k, N=n, MB=mb)
        if name in SHAPES:
            for c in floor_configs(n, k):
                p = plan(n, k, 1, c)
                try:
                    iso = timed([lambda w=w, c=c: launch_read(w, c, out) for w in ws], False)
                    on = timed([lambda w=w, c=c: launch_read(w, c, out) for w in ws], True)
                    keep(dict(base, what="floor", cfg=repr(c), ring_KB=p.ring_bytes / 1024, iso=iso, pdl=on))
                except Exception as exc:  # noqa: BLE001
                    keep(dict(base, what="floor", cfg=repr(c), error=repr(exc)[:300]))
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        for m in MS if name in SHAPES else (1,):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            xb = x.bfloat16()
            keep(dict(base, M=m, what="bf16 cuBLAS", iso=timed([lambda w=w: xb @ w for w in wb], False)))
            quant_matmul_config._TUNED.clear()
            y0 = quant_matmul(x, ws[0])
            pick = str(quant_matmul_config.LAST_PICK[0])
            err = rel_err(x, ws[0], y0)
            try:
                iso = timed([lambda w=w: quant_matmul(x, w) for w in ws], False)
                on = timed([lambda w=w: quant_matmul(x, w) for w in ws], True)
                keep(dict(base, M=m, what="shipped pick (quant_matmul, tuned)", cfg=pick, iso=iso, pdl=on, err=err))
            except Exception as exc:  # noqa: BLE001
                keep(dict(base, M=m, what="shipped pick", cfg=pick, error=repr(exc)[:300]))
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            for (s, mm, cfg), r in ok.items():
                if s != name or mm != m:
                    continue
                c = eval(cfg, {"HGEMVTConfig": HGEMVTConfig})  # noqa: S307 - our repr
                try:
                    iso = timed([lambda w=w, c=c: launch_hgemvt(x, w, c, y, coreside=CORESIDE) for w in ws], False)
                    on = timed([lambda w=w, c=c: launch_hgemvt(x, w, c, y, coreside=CORESIDE) for w in ws], True)
                    keep(dict(base, M=m, what="hgemvt", cfg=cfg, iso=iso, pdl=on,
                              err=max(r["err"], r["err_pdl"]),
                              err_sym=max(r["err_sym"], r["err_pdl_sym"]) if "err_sym" in r else None,
                              smem_KB=plan(n, k, m, c).smem_bytes / 1024))  # fmt: skip
                except Exception as exc:  # noqa: BLE001
                    keep(dict(base, M=m, what="hgemvt", cfg=cfg, error=repr(exc)[:300]))
        del ws, wb
        torch.cuda.empty_cache()
    failed = [r for r in checks if r not in ok.values()]
    (a.out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows, check_failed=failed,
                                                      checks=len(checks)), indent=1))  # fmt: skip


def report(a) -> None:
    doc = json.loads((a.out / "bench.json").read_text())
    meta, rows = doc["meta"], doc["rows"]
    gbps = meta["copy_GBps"]

    def pct(r, key):
        return 100 * r["MB"] * 1e3 / r[key] / gbps if r.get(key) else None

    md = [f"# Session 22: hgemvt (TMA-ring GEMV, no split-K) and the PDL ring-read floor, {meta.get('date')}", "",
          f"- command: `{a.command}`", f"- device: {meta.get('device')}; torch {meta.get('torch')}, triton {meta.get('triton')}",
          f"- measured copy bandwidth {gbps:.0f} GB/s; INLAID_QMM_TUNED={meta.get('qmm_tuned')}",
          "- times: us per call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = plain "
          "launches; pdl = the same graph captured in kernels.pdl.scope(1); % copy = (words + scales + zeros) / time / "
          "copy bandwidth; x bf16 = bf16 cuBLAS (iso) / time; err = relative error vs the fp32 dequantized product "
          "(asym weights, max of plain and PDL launches; err sym: symmetric weights)",
          f"- checks: {doc.get('checks')} configs run, failed or over 1e-2: {len(doc.get('check_failed', []))}"
          + (f" ({[(r['shape'], r['M'], r['cfg'], r.get('error', '')[:80]) for r in doc['check_failed'][:6]]})"
             if doc.get("check_failed") else ""), ""]  # fmt: skip
    for shape in dict.fromkeys(r["shape"] for r in rows):
        mine = [r for r in rows if r["shape"] == shape]
        fl = [r for r in mine if r["what"] == "floor"]
        md += [f"## {shape}", ""]
        if fl:
            md += ["Floor: pure ring read of the GEMV's bytes (hgemvt's mapping and boxes, whole ring issued before "
                   "the wait, no math):", "", "| config | ring KB | iso us | pdl us | % copy iso / pdl |",
                   "|---|---|---|---|---|"]  # fmt: skip
            for r in sorted(fl, key=lambda r: r.get("pdl") or 1e9):
                if r.get("iso"):
                    md.append(f"| {r['cfg']} | {r['ring_KB']:.0f} | {r['iso']:.2f} | {r['pdl']:.2f} | "
                              f"{pct(r, 'iso'):.0f}% / {pct(r, 'pdl'):.0f}% |")  # fmt: skip
                else:
                    md.append(f"| {r['cfg']} | failed: {r.get('error', '')[:100]} | | | |")
            md.append("")
        md += [
            "| M | kernel | config | iso us | pdl us | % copy iso / pdl | x bf16 iso / pdl | err | err sym |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for m in sorted({r["M"] for r in mine if "M" in r}):
            rm = [r for r in mine if r.get("M") == m]
            bf = next((r["iso"] for r in rm if r["what"] == "bf16 cuBLAS"), None)
            hg = sorted((r for r in rm if r["what"] == "hgemvt" and r.get("iso")), key=lambda r: r["iso"] + r["pdl"])
            show = [r for r in rm if r["what"] not in ("hgemvt",)] + hg[: a.top]
            for r in show:
                if not r.get("iso"):
                    md.append(
                        f"| {m} | {r['what']} | {r.get('cfg', '')} | failed: {r.get('error', '')[:80]} | | | | | |"
                    )
                    continue
                p2 = f"{r['pdl']:.2f}" if r.get("pdl") else "-"
                pc = f"{pct(r, 'iso'):.0f}% / {pct(r, 'pdl'):.0f}%" if r.get("pdl") else f"{pct(r, 'iso'):.0f}%"
                xb = f"{bf / r['iso']:.2f}x / {bf / r['pdl']:.2f}x" if r.get("pdl") and bf else (
                    f"{bf / r['iso']:.2f}x" if bf else "-")  # fmt: skip
                e = f"{r['err']:.1e}" if r.get("err") is not None else "-"
                es = f"{r['err_sym']:.1e}" if r.get("err_sym") is not None else "-"
                md.append(
                    f"| {m} | {r['what']} | {r.get('cfg', '')} | {r['iso']:.2f} | {p2} | {pc} | {xb} | {e} | {es} |"
                )
        md.append("")
    dest = a.dest or a.out
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{a.stem}.md").write_text("\n".join(md) + "\n")
    (dest / f"{a.stem}.json").write_text(json.dumps(dict(doc, meta=dict(meta, command=a.command)), indent=1))
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["check", "bench", "report", "list"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dest", type=Path, default=None)
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--extra", action="store_true", help="also o / qkv / gate-up at M = 1 (a few configs)")
    ap.add_argument("--top", type=int, default=8, help="report: hgemvt rows shown per (shape, M)")
    ap.add_argument("--command", default="bash bench/kernels/s22_hgemvt.sh")
    ap.add_argument("--stem", default="kernels-2026-12-02-s22-hgemvt")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.what == "list":
        cs = cases(a.extra)
        print(len(cs))
        for c in cs:
            print(c)
        return
    dict(check=check, bench=bench, report=report)[a.what](a)


if __name__ == "__main__":
    main()
