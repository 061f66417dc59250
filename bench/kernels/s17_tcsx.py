"""Session 17 (issue 4): the first device run of quant_tcsx (bench-only kinds "tcsx" / "tcsx2": quant_tcs's ACC_SCALE
K loop with x streamed through the word ring by TMA from an operand-ordered copy of x; built and checked offline only
before this run) against the shipped picks and bf16 cuBLAS at M = 16 / 32 / 64 / 128 on the 7B and 13B decode shapes.
One device call (s17_tcsx.sh):

  check   one process per compiled tcsx variant (kind, block_m, block_n, stages: s17_tcsx.VARIANTS) and one per M and
          model for the shipped picks (SHARDS; their kernels compile in parallel): every candidate at every (shape, M), PDL off and on: relative error against the fp32
          dequantized product (the tuner's guard, <= 1e-2) and, for tcsx, against tcs_reference(acc_scale=True) (its
          numerics, <= 5e-4 fp16); workspace clean; then STRESS more single launches against the model (a ring race
          shows as some launches off, session 13); the compiled kernel's registers / spills / shared memory
  bench   (alone) per shape and M: bf16 cuBLAS, the shipped pick, every tcsx candidate that passed its check, iso and
          under PDL (s8_gemv's protocol: one CUDA graph over rotating weight copies > 3x L2, median of 10 replays), the
          pre-pass (x into operand order, quant_tcl.permute_x) included in each tcsx call; then the best tcsx
          candidate again with x permuted once outside the graph (kernel alone: what a producer of x writing the
          operand order would give) and the pre-pass alone. 7B first; the 13B shapes while time is left.
  report  markdown + JSON: per point shipped vs best tcsx (with / without the pre-pass), every candidate, the check.
A tcsx kernel that fails to compile or is wrong is reported by its check rows and left out of the timing; the shipped
picks and cuBLAS are timed regardless.

Run 2 (helper H1, the harness mended): the tcsx candidates are the tuner's (quant_matmul_config._tcsx: buckets 32 / 64
/ 128, the same plans and splits as run 1's VARIANTS / splits_for) and run through quant_matmul's dispatcher (the
pre-pass inside the call); the check keeps no dense reference of an earlier shape (bench_kernels.rel_err caches it
under id(w.qweight), which a new weight can reuse: run 1 compared 7B qkv / up / o against another shape's product,
"The size of tensor a (12288) must match ... (22016)", and left those shipped picks and candidates untimed) and gives
its CUDA memory back after each shape; s17_tcsx.sh runs the check processes a few at a time (run 1's 20 at once plus
pytest ran out of GPU memory at the 7B gate/up and 13B points). The report adds ship rows (-ship.json, tuned_table's
format): best tcsx >= SHIP_MIN x the shipped pick iso AND under PDL, buckets 32 / 64 / 128.

Run 3 (helper H7, s17_m256.sh): M = 256 (the tuner's bucket 256: TCSX_PLANS[256], block_m 128 = two row blocks, splits
counted over both, quant_matmul_config.tcsx_row_blocks) and M = 512 (bench-only: VARIANTS[512], the same variants,
four row blocks; bucket 512 also holds every M > 256, prefill included, so it ships nothing from a 512-row point);
S17_SHARD_BY_MODEL=1 splits each variant's check process by model (7B / 13B).

Env: S17_SHAPES (comma list of SHAPES' names; default all, 7B first), S17_MS (default 64,32,128; 16 = run 1's bench-only
block_m 16 variants, 512 = run 3's bench-only variants), S17_STRESS (8), S17_SHARD_BY_MODEL (0).
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s17_tcsx.py {check,bench,report} --out DIR ...
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Collection
from pathlib import Path

import torch
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels import pdl, qmm_tuned
from inlaid_worker.kernels.quant_matmul_config import (
    TCSX_PLANS,
    QMMConfig,
    _tcsx,
    m_bucket,
    tcsx_row_blocks,
    tcsx_splits,
)

SHAPES = {
    "7B gate/up 4096x22016": (4096, 22016),
    "7B qkv 4096x12288": (4096, 12288),
    "7B up 4096x11008": (4096, 11008),
    "7B o 4096x4096": (4096, 4096),
    "7B down 11008x4096": (11008, 4096),
    "13B gate/up 5120x27648": (5120, 27648),
    "13B qkv 5120x15360": (5120, 15360),
    "13B o 5120x5120": (5120, 5120),
    "13B down 13824x5120": (13824, 5120),
}
if os.environ.get("S17_SHAPES"):
    SHAPES = {k: SHAPES[k] for k in os.environ["S17_SHAPES"].split(",")}
MS = tuple(int(v) for v in os.environ.get("S17_MS", "64,32,128").split(","))
STRESS = int(os.environ.get("S17_STRESS", "8"))
BY_MODEL = os.environ.get("S17_SHARD_BY_MODEL", "0") == "1"
KINDS = ("tcsx", "tcsx2")
# per M: (block_m, block_n = 64 x consumer warpgroups, ring stages, kinds): the tuner's TCSX_PLANS (run 1's VARIANTS;
# offline builds (s17_tcsx_sass.py): no spills in any; block_m 64 / 128 with two warpgroups run one program an SM (168
# registers), so a deeper ring is free there (8 / 5 stages); block_m 64 with one warpgroup (136 registers, 82 KB) two
# an SM; block_m 32 at M = 64: two row blocks, two programs an SM) and run 1's block_m 16 (lost everywhere: not offered)
# run 3: M = 512 bench-only with bucket 256's variants (block_m 128, four row blocks)
M256_PLANS = ((128, 128, 4, KINDS), (128, 128, 5, ("tcsx2",)))
VARIANTS = {16: ((16, 128, 4, KINDS),), 256: M256_PLANS, 512: M256_PLANS, **TCSX_PLANS}
GUARD, MODEL_TOL = 1e-2, 5e-4
SHIP_MIN = 1.03  # a ship row: best tcsx at least 3% faster than the shipped pick, iso and under PDL (session 16's rule)


def splits_for(k: int, n: int, block_n: int = 128, row_blocks: int = 1) -> list[int]:
    """Up to three splits whose grid holds 66..700 programs (half a wave of the H200's 132 SMs up to ~5 waves)."""
    return tcsx_splits(k, n, block_n, row_blocks)


def tcsx_cands(k: int, n: int, m: int) -> list[QMMConfig]:
    """The tuner's tcsx candidates of M's bucket (quant_matmul_config._tcsx); M = 16: run 1's bench-only variant;
    M = 512 (and 256 while the tuner does not offer it): run 3's, splits counted over all row blocks."""
    if m_bucket(m) in TCSX_PLANS:
        return _tcsx(m_bucket(m), n, k, 128)
    return [QMMConfig(bm, bn, 128, s, 4, st, True, kind) for bm, bn, st, kinds in VARIANTS.get(m, ()) for kind in kinds
            for s in splits_for(k, n, bn, tcsx_row_blocks(m_bucket(m), bm))]  # fmt: skip


def _key(c: QMMConfig) -> tuple:
    return ("tcsx", c.kind, c.block_m, c.block_n, c.num_stages)


# check processes: one per compiled tcsx variant (kind, block_m, block_n, stages), one per M and model for the
# shipped picks (their kernels compile in parallel: quant_tcs's ITERS is a constexpr, so most points compile their own)
# (S17_SHARD_BY_MODEL=1: one per variant and model, the model's name last)
SHARDS = sorted({_key(c) + ((shape.split()[0],) if BY_MODEL else ()) for shape, (k, n) in SHAPES.items() for m in MS
                 for c in tcsx_cands(k, n, m)})  # fmt: skip
SHARDS += [("shipped", m, size) for m in MS for size in ("7B", "13B") if any(s.startswith(size) for s in SHAPES)]


def shipped(k: int, n: int, m: int) -> QMMConfig | None:
    return qmm_tuned.load_table("nvidia-h200").get(("float16", m_bucket(m), n, k, 4, 128))


def is_tcsx(c: QMMConfig) -> bool:
    return c.kind in KINDS


def run(x: torch.Tensor, w, c: QMMConfig, y: torch.Tensor, xp: torch.Tensor | None = None):  # noqa: ANN001
    """One launch of c: with xp (x already permuted) tcsx through quant_tcsx.launch_tcsx (the kernel alone, its
    compiled kernel returned), else every kind through quant_matmul's dispatcher (tcsx: pre-pass + kernel)."""
    if is_tcsx(c) and xp is not None:
        from inlaid_worker.kernels.quant_tcsx import launch_tcsx

        return launch_tcsx(x, w, c.block_m, c.split_k, c.num_stages, c.block_n // 64, y, c.kind, xp=xp)
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    launch_quant_matmul(x, w, c, y)
    return None


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).norm() / ref.norm())


def check(out: Path, shard: int) -> None:
    import bench_kernels
    from bench_kernels import random_gptq, rel_err, workspace_clean
    from inlaid_worker.kernels.quant_tcs import tcs_reference
    from inlaid_worker.kernels.quant_tcsx import tcsx_permute

    key = SHARDS[shard]
    kind = key[0]
    with (out / f"check-{shard}.jsonl").open("w") as f:
        for shape, (k, n) in SHAPES.items():
            w = None
            bench_kernels._DENSE.clear()  # rel_err's cache is keyed by id(w.qweight): a new weight may reuse the id
            torch.cuda.empty_cache()
            for m in MS:
                if kind == "shipped":
                    c0 = shipped(k, n, m) if m == key[1] and shape.startswith(key[2] + " ") else None
                    cands = [c0] if c0 is not None else []
                elif len(key) > 5 and not shape.startswith(key[5] + " "):  # S17_SHARD_BY_MODEL: another model's
                    cands = []
                else:
                    cands = [c for c in tcsx_cands(k, n, m) if _key(c) == key[:5]]
                if not cands:
                    continue
                if w is None:
                    torch.manual_seed(0)
                    w = random_gptq(k, n, 4, False)
                torch.manual_seed(m)
                x = torch.randn(m, k, device="cuda").half()
                model = tcs_reference(x, w, acc_scale=True) if kind != "shipped" else None
                torch.cuda.empty_cache()  # tcs_reference's temporaries (GiBs at 13B gate/up)
                for c in cands:
                    t0 = time.time()
                    row: dict = dict(shape=shape, M=m, cfg=str(c))
                    try:
                        y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                        ck = run(x, w, c, y)
                        row["err"] = rel_err(x, w, y)
                        row["clean"] = workspace_clean()
                        if model is not None:
                            row["model_err"] = _rel(y, model)
                        with pdl.scope(1):
                            y.fill_(float("nan"))
                            run(x, w, c, y)
                            row["err_pdl"] = rel_err(x, w, y)
                            row["clean_pdl"] = workspace_clean()
                            if model is not None:
                                row["model_err_pdl"] = _rel(y, model)
                        if model is not None:  # single launches against the model: a ring race shows as outliers
                            errs = []
                            for _ in range(STRESS):
                                y.fill_(float("nan"))
                                run(x, w, c, y)
                                errs.append(_rel(y, model))
                            row["stress_worst"] = max(errs)
                            row["stress_bad"] = sum(not (e <= MODEL_TOL) for e in errs)
                            row["clean_stress"] = workspace_clean()
                        if is_tcsx(c):  # the compiled kernel: one launch on x permuted once (the same kernel)
                            ck = run(x, w, c, y, tcsx_permute(x, w))
                        if ck is not None:
                            row["n_regs"] = getattr(ck, "n_regs", None)
                            row["n_spills"] = getattr(ck, "n_spills", None)
                            row["shared"] = getattr(getattr(ck, "metadata", None), "shared", None)
                    except Exception as exc:  # noqa: BLE001 - reported, and the candidate is not timed
                        row["error"] = repr(exc)[:600]
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(f"[check {shard}] {shape} M={m} {short_cfg(str(c))} "
                          f"{row.get('model_err', row.get('err', row.get('error')))} {time.time() - t0:.1f}s",
                          flush=True)  # fmt: skip


def read_checks(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(out.glob("check-*.jsonl")) for line in p.read_text().splitlines()]


def good(r: dict) -> bool:
    if "error" in r or not (r["err"] <= GUARD and r["err_pdl"] <= GUARD and r["clean"] and r["clean_pdl"]):
        return False
    if "model_err" in r:
        return (r["model_err"] <= MODEL_TOL and r["model_err_pdl"] <= MODEL_TOL and r.get("stress_bad", 1) == 0
                and r.get("clean_stress", False))  # fmt: skip
    return True


def bench(out: Path) -> None:
    from bench_kernels import copies, gptq_bytes, random_gptq, time_pdl
    from device_common import bench_meta
    from inlaid_worker.kernels.quant_tcsx import tcsx_permute

    checks = read_checks(out)
    ok = {(r["shape"], r["M"], r["cfg"]) for r in checks if good(r)}
    failed = {(r["shape"], r["M"], r["cfg"]) for r in checks if not good(r)}
    meta = bench_meta()
    meta["pdl_supported"] = pdl.supported()
    rows: list[dict] = []
    doc = dict(meta=meta, bench=rows)
    t0 = time.time()

    timed = time_pdl

    for shape, (k, n) in SHAPES.items():
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        nbytes = gptq_bytes(ws[0])
        for m in MS:
            x = torch.randn(m, k, device="cuda").half()
            xb = x.bfloat16()
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            row: dict = dict(shape=shape, K=k, N=n, M=m, MB=nbytes / 1e6)
            row["bf16_us"] = timed([lambda w=w: xb @ w for w in wb], False)
            old = shipped(k, n, m)
            row["shipped"] = str(old)
            if old is not None and (shape, m, str(old)) not in failed:
                try:
                    calls = [lambda w=w: run(x, w, old, y) for w in ws]
                    row["shipped_iso_us"], row["shipped_pdl_us"] = timed(calls, False), timed(calls, True)
                except Exception as exc:  # noqa: BLE001
                    row["shipped_error"] = repr(exc)[:300]
            cands = []
            for c in tcsx_cands(k, n, m):
                if (shape, m, str(c)) not in ok:
                    continue
                try:
                    calls = [lambda w=w, c=c: run(x, w, c, y) for w in ws]
                    cands.append((str(c), timed(calls, False), timed(calls, True)))
                except Exception as exc:  # noqa: BLE001
                    print(f"timing failed {c}: {exc!r}"[:300], flush=True)
            row["cands"] = cands
            if cands:
                best = min(cands, key=lambda t: t[1] + t[2])
                row["best"], row["best_iso_us"], row["best_pdl_us"] = best
                c = eval(best[0], {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
                xp = tcsx_permute(x, ws[0])
                calls = [lambda w=w: run(x, w, c, y, xp) for w in ws]
                row["kernel_iso_us"], row["kernel_pdl_us"] = timed(calls, False), timed(calls, True)
                row["prepass_us"] = timed([lambda: tcsx_permute(x, ws[0]) for _ in ws], False)
            rows.append(row)
            print(json.dumps({a: v for a, v in row.items() if a != "cands"}), f"{time.time() - t0:.0f}s", flush=True)
            tmp = out / "bench.json.tmp"  # the shell's timeout may stop this process mid-write: replace atomically
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, out / "bench.json")
        del ws, wb
        torch.cuda.empty_cache()


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    checks = read_checks(out)
    path = out / "bench.json"
    doc = json.loads(path.read_text()) if path.exists() else dict(meta={}, bench=[])
    meta, rows = doc["meta"], doc["bench"]
    copy = meta.get("copy_GBps", 0) * 1e9

    def pct(mb: float, us: float | None) -> str:
        return "-" if not us or not copy else f"{100 * mb * 1e6 / (us * 1e-6) / copy:.0f}%"

    md = [f"# Session 17: quant_tcsx (x streamed through the word ring) vs the shipped picks, {meta.get('date', '')}",
          "", *report_head(meta, command),
          "- times: us per GEMM call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = "
          "plain launches, pdl = the same graph under PDL (kernels.pdl mode 1); tcsx = pre-pass (x into operand "
          "order) + kernel per call; kernel = the best tcsx candidate with x permuted once outside the graph",
          "- candidates: s17_tcsx.VARIANTS (tcsx / tcsx2 at block_m = M's bucket, 4 stages, two "
          "warpgroups; at M = 64 also one warpgroup (n64), 8 stages, block_m 32; at M = 128 5 stages; at M = 256 / 512 "
          "block_m 128 (two / four row blocks), 4 and 5 stages) x the splits of "
          "s17_tcsx.splits_for (at M >= 256 counted over every row block); timed only if the check passed (guard "
          "<= 1e-2 vs the fp32 dequantized product, <= 5e-4 vs tcs_reference(acc_scale=True), PDL off and on, every "
          "stress launch, workspace clean)", "",
          "## Shipped pick vs best tcsx (least iso + pdl)", "",
          "| shape | M | bf16 | shipped | shipped iso / pdl | best tcsx | tcsx iso / pdl | speed-up iso / pdl | "
          "kernel alone iso / pdl | kernel-alone speed-up iso / pdl | pre-pass | tcsx % copy iso / pdl |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        si, sp = r.get("shipped_iso_us"), r.get("shipped_pdl_us")
        bi, bp = r.get("best_iso_us"), r.get("best_pdl_us")
        ki, kp = r.get("kernel_iso_us"), r.get("kernel_pdl_us")
        sup = f"{si / bi:.3f} / {sp / bp:.3f}" if si and sp and bi and bp else "-"
        ksup = f"{si / ki:.3f} / {sp / kp:.3f}" if si and sp and ki and kp else "-"
        md.append(f"| {r['shape']} | {r['M']} | {_f(r['bf16_us'])} | {short_cfg(r['shipped'], False)} | {_f(si)} / "
                  f"{_f(sp)} | {short_cfg(r.get('best'), False)} | {_f(bi)} / {_f(bp)} | {sup} | {_f(ki)} / {_f(kp)} "
                  f"| {ksup} | {_f(r.get('prepass_us'))} | {pct(r['MB'], bi)} / {pct(r['MB'], bp)} |")  # fmt: skip
    ship = ship_rows(rows)
    md += ["", f"## Pick changes (ship rows: best tcsx >= {SHIP_MIN} x the shipped pick iso and pdl, buckets "
           f"{' / '.join(map(str, sorted(TCSX_PLANS)))})", "",
           "| shape | M | old pick | old iso / pdl | new pick | new iso / pdl | speed-up iso / pdl |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in ship:
        md.append(f"| {r['shape']} | {r['M']} | {short_cfg(r['before'], False)} | {r['before_iso_us']:.2f} / "
                  f"{r['before_us']:.2f} | {short_cfg(r['pick'], False)} | {r['pick_iso_us']:.2f} / {r['pick_us']:.2f} "
                  f"| {r['before_iso_us'] / r['pick_iso_us']:.3f} / {r['before_us'] / r['pick_us']:.3f} |")  # fmt: skip
    if not ship:
        md.append("| (none) | | | | | | |")
    md += ["", "## Every timed tcsx candidate (iso / pdl us, pre-pass included)", "",
           "| shape | M | candidate | iso | pdl |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for c, i, p in sorted(r.get("cands", []), key=lambda t: t[1] + t[2]):
            md.append(f"| {r['shape']} | {r['M']} | {short_cfg(c, False)} | {i:.2f} | {p:.2f} |")
    tc = [c for c in checks if "model_err" in c or ("error" in c and "tcsx" in c["cfg"])]
    bad = [c for c in tc if not good(c)]
    md += ["", "## Check", "",
           f"- tcsx candidates checked: {len(tc)}; failed: {len(bad)} (raised {sum('error' in c for c in tc)}); "
           f"shipped picks checked: {len(checks) - len(tc)}, failed {sum(not good(c) for c in checks if c not in tc)}",
           f"- worst tcsx error vs tcs_reference(acc_scale=True) (off / on / stress): "
           f"{max((c.get('model_err', 0) for c in tc if 'error' not in c), default=float('nan')):.2e} / "
           f"{max((c.get('model_err_pdl', 0) for c in tc if 'error' not in c), default=float('nan')):.2e} / "
           f"{max((c.get('stress_worst', 0) for c in tc if 'error' not in c), default=float('nan')):.2e}; stress "
           f"launches off: {sum(c.get('stress_bad', 0) for c in tc)} of {STRESS * len(tc)}"]  # fmt: skip

    def variant(cfg: str) -> str:
        c = eval(cfg, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
        return f"{c.kind} m{c.block_m} n{c.block_n} st{c.num_stages}"

    regs = sorted({(variant(c["cfg"]), c.get("n_regs"), c.get("n_spills"), c.get("shared")) for c in tc
                   if "n_regs" in c})  # fmt: skip
    md += [f"- compiled (variant, registers, spills, shared bytes): {regs}"]
    seen = {(c["shape"], c["M"], c["cfg"]) for c in checks}
    missing = [f"{shape} M = {m} {short_cfg(str(c), False)}" for shape, (k, n) in SHAPES.items() for m in MS
               for c in tcsx_cands(k, n, m) if (shape, m, str(c)) not in seen]  # fmt: skip
    md += [
        f"- never checked (a check process ran out of time or died): {len(missing)}"
        + (f", e.g. {'; '.join(missing[:6])}" if missing else "")
    ]
    md += [f"- FAILED {c['shape']} M = {c['M']} {short_cfg(c['cfg'], False)}: "
           + (c["error"][:300] if "error" in c else json.dumps({a: v for a, v in c.items() if a not in ("shape", "M", "cfg")}))
           for c in bad[:12]]  # fmt: skip
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), bench=rows, checks=checks))
    (dest / f"{stem}-ship.json").write_text(json.dumps(dict(meta=dict(meta, command=command), bench=ship), indent=1))


def ship_rows(rows: list[dict], buckets: Collection[int] = TCSX_PLANS) -> list[dict]:
    """Rows for bench/kernels/tuned_table.py (M, N, K, pick, pick_us = under PDL): where the best candidate (least
    iso + pdl, pre-pass included) is >= SHIP_MIN x faster than the timed shipped pick both iso and under PDL, at the
    tuner's buckets for the kind (tcsx's by default). An untimed shipped pick ships nothing."""
    out = []
    for r in rows:
        si, sp, bi, bp = (r.get(f) for f in ("shipped_iso_us", "shipped_pdl_us", "best_iso_us", "best_pdl_us"))
        if m_bucket(r["M"]) not in buckets or not (si and sp and bi and bp):
            continue
        if si / bi >= SHIP_MIN and sp / bp >= SHIP_MIN:
            out.append(dict(shape=r["shape"], K=r["K"], N=r["N"], M=r["M"], dtype="float16", bits=4, group=128,
                            before=r["shipped"], before_iso_us=si, before_us=sp, pick=r["best"], pick_iso_us=bi,
                            pick_us=bp))  # fmt: skip
    return out


def main() -> None:
    ap = device_parser(("check", "bench"), "bash bench/kernels/s17_tcsx.sh", "kernels-s17-tcsx")
    ap.add_argument("--shard", type=int, default=0)
    run_phase(ap, dict(check=lambda a: check(a.out, a.shard), bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
