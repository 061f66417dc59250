"""Session 10: the CUDA C++ int4 GEMM (cu_gemv.cu + cu_gemv_kernel.py here, NVRTC) against today's shipped Triton picks on the H200.
One device call (cu_gemv.sh):

  warm    (background) runs every shipped Triton pick of the timed shapes once (fills Triton's cache)
  check   compiles the CUDA instantiations (NVRTC, seconds reported), then correctness against the fp32 product of the
          dequantized weight: several shapes and M, asym / sym, act-order, bf16, cluster and non-cluster configs, and
          one CUDA graph captured under PDL (graph replay vs eager; not bit-exact: fp32 atomics)
  bench   per shape and M: bf16 cuBLAS, the shipped Triton pick (tuned/nvidia-h200.json, as s9_gemv looks it up) and
          every CUDA candidate (cu_gemv.candidates), timed iso (plain launches) over rotating weight copies (> 3x L2)
          in one CUDA graph, then the 4 fastest iso again under PDL; then 32-layer PDL chains of distinct weights
          (up/down, and the decode layer qkv/o/gate-up/down) with bf16, the Triton picks and the CUDA picks
  report  markdown + JSON
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/cu_gemv.py {warm,check,bench,report} --out DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cu_gemv_kernel as cu_gemv  # (bench/kernels: the kernel module, its .cu and repack, out of the worker package)
import torch
from cu_gemv_kernel import CuConfig
from device_common import device_parser, report_head, run_phase, short_cfg, write_report
from inlaid_worker.kernels import pdl, qmm_tuned
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, m_bucket

SHAPES = {  # name: (K, N)
    "7B up 4096x11008": (4096, 11008),
    "7B down 11008x4096": (11008, 4096),
    "7B qkv 4096x12288": (4096, 12288),
    "7B o 4096x4096": (4096, 4096),
    "7B gate/up 4096x22016": (4096, 22016),
}
MS = (1, 2, 4, 8, 16)
LAYERS = 32
PDL_TOP = 4  # CUDA candidates re-timed under PDL (the fastest iso)
TOL = 1e-2
CHAINS = (("up/down", ["7B up 4096x11008", "7B down 11008x4096"]),
          ("layer", ["7B qkv 4096x12288", "7B o 4096x4096", "7B gate/up 4096x22016", "7B down 11008x4096"]))  # fmt: skip


def shipped(k: int, n: int, m: int) -> QMMConfig | None:
    return qmm_tuned.load_table("nvidia-h200").get(("float16", m_bucket(m), n, k, 4, 128))


def warm(out: Path, shapes: list[str]) -> None:
    from bench_kernels import random_gptq
    from device_common import run_cfg

    for name in shapes:
        k, n = SHAPES[name]
        w = random_gptq(k, n, 4, False)
        for m in MS:
            c = shipped(k, n, m)
            if c is not None:
                t0 = time.time()
                run_cfg(torch.randn(m, k, device="cuda").half(), w, c)
                with pdl.scope(1):
                    run_cfg(torch.randn(m, k, device="cuda").half(), w, c)
                print(f"[warm] {name} M={m} {short_cfg(str(c))} {time.time() - t0:.1f}s", flush=True)


def _weight(k: int, n: int, sym: bool, act: bool, offset: int = 1):  # type: ignore[no-untyped-def]
    from bench_kernels import random_gptq

    w = random_gptq(k, n, 4, act)
    if sym:  # every stored zero decodes to 8
        word = sum((8 - offset) << (4 * i) for i in range(8))
        word = word - 2**32 if word >= 2**31 else word
        w = type(w)(w.qweight, torch.full_like(w.qzeros, word), w.scales, w.perm, 4, w.group_size, True, offset, k, n)
    return w


def _ref(x: torch.Tensor, w) -> torch.Tensor:  # type: ignore[no-untyped-def]
    from inlaid_worker.kernels.quant_matmul import dequantize_gptq

    groups = (torch.arange(w.in_features, device=x.device) // w.group_size).int()
    dense = dequantize_gptq(w.qweight, w.qzeros, w.scales, groups, w.bits, w.zero_offset)
    xg = x.float()[:, w.perm.long()] if w.perm is not None else x.float()
    return xg @ dense


def _run(x: torch.Tensor, w, c: CuConfig) -> torch.Tensor:  # type: ignore[no-untyped-def]
    y = torch.full((x.shape[0], w.out_features), float("nan"), dtype=x.dtype, device=x.device)
    cu_gemv.launch_cu_gemv(x, w, c, y)
    return y


def instantiations() -> list[str]:
    """Every instantiation the check and the bench use."""
    names = set()
    for mb in (8, 16):
        for ring in cu_gemv.RINGS:
            for cl in (False, True):
                names.add(cu_gemv._kernel_name(mb, ring, cl, False, False, False))
    for sym, perm, bf16 in ((True, False, False), (False, True, False), (False, False, True), (True, True, True)):
        for mb in (8, 16):
            for cl in (False, True):
                names.add(cu_gemv._kernel_name(mb, 8, cl, sym, perm, bf16))
    return sorted(names)


CHECK_CASES = [  # (K, N, M values, sym, act, dtype, configs)
    (256, 128, (1, 3, 8, 9, 16), False, False, torch.float16, [CuConfig(1, 4, 1, 8), CuConfig(2, 2, 2, 4), CuConfig(8, 1, 4, 16)]),
    (4096, 11008, (1, 2, 4, 8, 16), False, False, torch.float16, [CuConfig(4, 2, 1, 8), CuConfig(4, 2, 4, 4), CuConfig(16, 1, 8, 8)]),
    (11008, 4096, (1, 5, 16), False, False, torch.float16, [CuConfig(2, 4, 4, 8), CuConfig(8, 1, 4, 16)]),
    (4096, 4096, (1, 7, 16), True, False, torch.float16, [CuConfig(2, 2, 1, 8), CuConfig(4, 2, 4, 8)]),
    (1024, 512, (1, 4, 12), False, True, torch.float16, [CuConfig(1, 4, 1, 8), CuConfig(2, 4, 2, 8)]),
    (1024, 512, (2, 16), False, False, torch.bfloat16, [CuConfig(1, 4, 1, 8), CuConfig(2, 4, 2, 8)]),
    (2048, 1024, (3, 16), True, True, torch.bfloat16, [CuConfig(2, 2, 1, 8), CuConfig(4, 2, 4, 8)]),
]  # fmt: skip


def check(out: Path) -> None:
    doc: dict = dict(available=cu_gemv.available(), cases=[])
    t0 = time.time()
    doc["compile_s"] = cu_gemv.compile_all(instantiations())
    doc["compiler"] = sorted(set(cu_gemv.COMPILER))
    doc["instantiations"] = len(instantiations())
    print(
        f"compiled {doc['instantiations']} instantiations in {doc['compile_s']:.1f}s with {doc['compiler']}", flush=True
    )
    torch.manual_seed(0)
    for k, n, ms, sym, act, dtype, cfgs in CHECK_CASES:
        w = _weight(k, n, sym, act)
        for m in ms:
            x = torch.randn(m, k, device="cuda").to(dtype)
            ref = _ref(x, w)
            for c in cfgs:
                row = dict(K=k, N=n, M=m, sym=sym, act=act, dtype=str(dtype), cfg=str(c))
                try:
                    y = _run(x, w, c)
                    row["err"] = float((y.float() - ref).norm() / ref.norm())
                    with pdl.scope(1):
                        row["err_pdl"] = float((_run(x, w, c).float() - ref).norm() / ref.norm())
                except Exception as exc:  # noqa: BLE001 - reported
                    row["error"] = repr(exc)[:600]
                doc["cases"].append(row)
                print(json.dumps(row), flush=True)
    # a PDL chain captured in a graph: replay vs eager (not bit-exact: the split-K sums are fp32 atomics)
    w1, w2 = _weight(4096, 11008, False, False), _weight(11008, 4096, False, False)
    x = torch.randn(4, 4096, device="cuda").half()
    h = torch.empty(4, 11008, device="cuda", dtype=torch.float16)
    y = torch.empty(4, 4096, device="cuda", dtype=torch.float16)
    c1, c2 = CuConfig(4, 2, 4, 8), CuConfig(8, 2, 4, 8)

    def chain() -> None:
        cu_gemv.launch_cu_gemv(x, w1, c1, h)
        cu_gemv.launch_cu_gemv(h, w2, c2, y)

    chain()
    eager = y.clone()
    graph = torch.cuda.CUDAGraph()
    with pdl.scope(1):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            chain()
        torch.cuda.current_stream().wait_stream(s)
        y.zero_()
        with torch.cuda.graph(graph):
            chain()
    y.zero_()
    graph.replay()
    torch.cuda.synchronize()
    doc["graph_pdl_equal"] = bool(torch.equal(y, eager))
    doc["graph_err"] = float((y.float() - _ref(h, w2)).norm() / _ref(h, w2).norm())
    ok = [r for r in doc["cases"] if "error" not in r]
    doc["worst_err"] = max((max(r["err"], r["err_pdl"]) for r in ok), default=float("nan"))
    doc["failed"] = [r for r in doc["cases"] if "error" in r or max(r["err"], r["err_pdl"]) > TOL]
    doc["seconds"] = time.time() - t0
    print(f"check: {len(doc['cases'])} cases, {len(doc['failed'])} failed, worst {doc['worst_err']:.2e}, "
          f"graph+PDL equal {doc['graph_pdl_equal']}, {doc['seconds']:.0f}s", flush=True)  # fmt: skip
    (out / "check.json").write_text(json.dumps(doc, indent=1))


def _timed(calls: list, use_pdl: bool) -> float:
    from bench_kernels import time_pdl

    return time_pdl(calls, use_pdl)


def _cu_calls(x: torch.Tensor, ws: list, c: CuConfig, y: torch.Tensor) -> list:
    return [lambda w=w: cu_gemv.launch_cu_gemv(x, w, c, y) for w in ws]


def _tr_calls(x: torch.Tensor, ws: list, c: QMMConfig, y: torch.Tensor) -> list:
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    return [lambda w=w: launch_quant_matmul(x, w, c, y) for w in ws]


def bench(out: Path, shapes: list[str], budget_s: float, ms: tuple[int, ...] = MS) -> None:
    from bench_kernels import copies, gptq_bytes, random_gptq
    from device_common import bench_meta

    meta = bench_meta()
    doc: dict = dict(meta=meta, bench=[], chains=[])
    t0 = time.time()
    for shape in shapes:
        k, n = SHAPES[shape]
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        for w in ws:
            cu_gemv.repacked(w)
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        nbytes = gptq_bytes(ws[0])
        for m in ms:
            if time.time() - t0 > budget_s:
                print(f"budget reached before {shape} M={m}", flush=True)
                break
            x = torch.randn(m, k, device="cuda").half()
            y = torch.empty(m, n, device="cuda", dtype=torch.float16)
            row: dict = dict(shape=shape, K=k, N=n, M=m, MB=nbytes / 1e6)
            xb = x.bfloat16()
            row["bf16_us"] = _timed([lambda w=w: xb @ w for w in wb], False)
            tri = shipped(k, n, m)
            row["triton"] = str(tri)
            if tri is not None:
                try:
                    row["triton_iso_us"] = _timed(_tr_calls(x, ws, tri, y), False)
                    row["triton_pdl_us"] = _timed(_tr_calls(x, ws, tri, y), True)
                except Exception as exc:  # noqa: BLE001
                    row["triton_error"] = repr(exc)[:300]
            iso = []
            for c in cu_gemv.candidates(n, k, m):
                try:
                    iso.append((str(c), _timed(_cu_calls(x, ws, c, y), False)))
                except Exception as exc:  # noqa: BLE001
                    print(f"cu {c} failed: {exc!r}"[:300], flush=True)
            iso.sort(key=lambda t: t[1])
            row["cu_iso"] = iso
            row["occupancy"] = {cs: cu_gemv.blocks_per_sm(m, k, eval(cs, {"CuConfig": CuConfig}), ws[0], x.dtype)
                                for cs, _ in iso[:PDL_TOP]}  # fmt: skip
            both = []
            for cs, t_iso in iso[:PDL_TOP]:
                c = eval(cs, {"CuConfig": CuConfig})  # noqa: S307 - our own repr
                both.append((cs, t_iso, _timed(_cu_calls(x, ws, c, y), True)))
            row["cu_both"] = both
            if both:
                best = min(both, key=lambda t: t[1] + t[2])
                row["cu_pick"], row["cu_iso_us"], row["cu_pdl_us"] = best
                row["cu_best_iso"] = iso[0]
                row["cu_best_pdl"] = min(both, key=lambda t: t[2])
            doc["bench"].append(row)
            print(json.dumps({a: v for a, v in row.items() if a not in ("cu_iso", "cu_both")}),
                  f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
            (out / "bench.json").write_text(json.dumps(doc, indent=1))
        del ws, wb
        torch.cuda.empty_cache()
    diagnose(out, doc, carve=False)
    chains(out, doc)


DIAGS = {"full": 0, "read_only": 4, "read_no_stage": 12}
"""cu_gemv.cu's diagnostic bits: 4 = no arithmetic, 8 = no x staging (run 4 also timed bit 16, x staged before the first
weight copies, as "x_first" / "x_first_read": no gain, removed from the kernel)."""
DIAG_COLUMNS = (*DIAGS, "x_first", "x_first_read")


def diagnose(out: Path, doc: dict, carve: bool) -> None:
    """The 3 fastest configs of the first shape at M = 1 and 16, re-timed (iso) in the kernel's diagnostic modes
    (DIAGS); with `carve`, also at the preferred shared-memory carveout 0 (the driver's choice) vs 100 (this module's)."""
    from bench_kernels import copies, random_gptq
    from cuda.bindings import driver

    attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
    rows = [r for r in doc["bench"] if r["M"] in (1, 16) and r["shape"] == doc["bench"][0]["shape"]]
    for r in rows:
        k, n, m = r["K"], r["N"], r["M"]
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        x = torch.randn(m, k, device="cuda").half()
        y = torch.empty(m, n, device="cuda", dtype=torch.float16)
        for cs, _ in r["cu_iso"][:3]:
            c = eval(cs, {"CuConfig": CuConfig})  # noqa: S307 - our own repr
            func = cu_gemv._function(cu_gemv.instantiation(m, c, ws[0], x.dtype), torch.cuda.current_device())
            rec: dict = dict(shape=r["shape"], M=m, cfg=cs)
            for pct in (0, 100) if carve else (100,):
                driver.cuFuncSetAttribute(func, attr, pct)
                rec[f"occ_{pct}"] = cu_gemv.blocks_per_sm(m, k, c, ws[0], x.dtype)
                rec[f"iso_{pct}"] = _timed(_cu_calls(x, ws, c, y), False)
            for name, bits in DIAGS.items():
                calls = [lambda w=w, b=bits: cu_gemv.launch_cu_gemv(x, w, c, y, diag=b) for w in ws]
                rec[name] = _timed(calls, False)
            doc.setdefault("diag", []).append(rec)
            print(json.dumps(rec), flush=True)
        del ws
    (out / "bench.json").write_text(json.dumps(doc, indent=1))


def chains(out: Path, doc: dict) -> None:
    from bench_kernels import gptq_bytes, random_gptq
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul

    pick = {(r["shape"], r["M"]): r for r in doc["bench"]}
    for label, names in CHAINS:
        if not all((s, 1) in pick for s in names):
            continue
        q = [[random_gptq(*SHAPES[s], 4, False) for s in names] for _ in range(LAYERS)]
        for layer in q:
            for w in layer:
                cu_gemv.repacked(w)
        b = [[torch.randn(*SHAPES[s], device="cuda", dtype=torch.bfloat16) for s in names] for _ in range(LAYERS)]
        nbytes = sum(gptq_bytes(w) for w in q[0])
        for m in MS:
            if not all((s, m) in pick and "cu_pick" in pick[(s, m)] for s in names):
                continue
            xs = {s: torch.randn(m, SHAPES[s][0], device="cuda").half() for s in names}
            ys = {s: torch.empty(m, SHAPES[s][1], device="cuda", dtype=torch.float16) for s in names}
            xb = {s: v.bfloat16() for s, v in xs.items()}
            rec: dict = dict(chain=label, M=m, layers=LAYERS, MB_per_layer=nbytes / 1e6)
            rec["bf16_us"] = _timed([lambda w=w, s=s: xb[s] @ w for layer in b for s, w in zip(names, layer)], False)
            tri = [shipped(*SHAPES[s], m) for s in names]
            if all(c is not None for c in tri):
                calls = [lambda w=w, s=s, c=c: launch_quant_matmul(xs[s], w, c, ys[s])
                         for layer in q for s, w, c in zip(names, layer, tri)]  # fmt: skip
                rec["triton_cfgs"] = [str(c) for c in tri]
                rec["triton_pdl_us"] = _timed(calls, True)
                rec["triton_iso_us"] = _timed(calls, False)
            for var, key in (("cu", "cu_pick"), ("cu_fastest_pdl", "cu_best_pdl")):
                cfgs = [pick[(s, m)][key] for s in names]
                cfgs = [c[0] if isinstance(c, list | tuple) else c for c in cfgs]
                if var != "cu" and cfgs == rec.get("cu_cfgs"):
                    continue
                cs = [eval(c, {"CuConfig": CuConfig}) for c in cfgs]  # noqa: S307 - our own repr
                calls = [lambda w=w, s=s, c=c: cu_gemv.launch_cu_gemv(xs[s], w, c, ys[s])
                         for layer in q for s, w, c in zip(names, layer, cs)]  # fmt: skip
                rec[f"{var}_cfgs"] = cfgs
                rec[f"{var}_pdl_us"] = _timed(calls, True)
                rec[f"{var}_iso_us"] = _timed(calls, False)
            doc["chains"].append(rec)
            print(json.dumps(rec), flush=True)
            (out / "bench.json").write_text(json.dumps(doc, indent=1))
        del q, b
        torch.cuda.empty_cache()


def _show(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    doc = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else dict(meta={}, bench=[],
                                                                                                   chains=[])  # fmt: skip
    chk = json.loads((out / "check.json").read_text()) if (out / "check.json").exists() else {}
    meta = doc["meta"]
    copy = meta.get("copy_GBps", 0) * 1e9

    def pct(mb: float, us: float | None) -> str:
        return "-" if not us or not copy else f"{100 * mb * 1e6 / (us * 1e-6) / copy:.0f}%"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if not a or not b else f"{a / b:.2f}"

    md = [f"# Session 10: CUDA C++ int4 GEMM (cu_gemv, NVRTC) vs the shipped Triton picks, {meta.get('date', '')}", "",
          *report_head(meta, command),
          f"- compile: {chk.get('instantiations', '-')} instantiations in {_show(chk.get('compile_s'))} s with "
          f"{', '.join(chk.get('compiler', [])) or '-'}",
          "- times: us per GEMV call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = "
          "plain launches, pdl = the same graph captured with PDL (pdl.scope(1)); % copy = packed bytes (GPTQ words + "
          "scales + zeros) / time / copy bandwidth; x bf16 = bf16 cuBLAS (same harness, iso) / time",
          "- triton = the shipped pick of kernels/tuned/nvidia-h200.json (as s9_gemv looks it up); cu = the CUDA "
          f"candidate with the least iso + pdl among the {PDL_TOP} fastest iso of cu_gemv.candidates", "",
          "## Per shape and M", "",
          "| shape | M | bf16 | triton pick | triton iso / pdl | cu pick | cu iso / pdl | cu % copy (iso / pdl) | "
          "cu x bf16 (iso / pdl) | cu / triton (iso / pdl) | cu fastest iso | pick blocks/SM |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in doc["bench"]:
        ti, tp, ci, cp = r.get("triton_iso_us"), r.get("triton_pdl_us"), r.get("cu_iso_us"), r.get("cu_pdl_us")
        fast = r.get("cu_best_iso")
        occ = r.get("occupancy", {}).get(r.get("cu_pick", ""), "-")
        md.append(f"| {r['shape']} | {r['M']} | {_show(r['bf16_us'])} | {short_cfg(r.get('triton'), False)} | "
                  f"{_show(ti)} / {_show(tp)} | {r.get('cu_pick', '-').replace('CuConfig', '')} | {_show(ci)} / {_show(cp)} | "
                  f"{pct(r['MB'], ci)} / {pct(r['MB'], cp)} | {ratio(r['bf16_us'], ci)} / {ratio(r['bf16_us'], cp)} | "
                  f"{ratio(ci, ti)} / {ratio(cp, tp)} | {fast[0].replace('CuConfig', '') + ' ' + _show(fast[1]) if fast else '-'} | {occ} |")  # fmt: skip
    if doc.get("carveout"):  # run 3 of 2026-11-30 (carveout 0 vs 100, read only)
        md += ["", "## Diagnostic: shared-memory carveout and arithmetic (iso us; occupancy = resident blocks per SM)", "",
               "| shape | M | config | carveout 0: blocks/SM, us | carveout 100: blocks/SM, us | read only (no arithmetic), us |",
               "|---|---|---|---|---|---|"]  # fmt: skip
        for c in doc["carveout"]:
            md.append(f"| {c['shape']} | {c['M']} | {c['cfg'].replace('CuConfig', '')} | {c['occ_0']}, {c['iso_0']:.2f} | "
                      f"{c['occ_100']}, {c['iso_100']:.2f} | {_show(c.get('read_only_iso'))} |")  # fmt: skip
    if doc.get("diag"):
        cols = [d for d in DIAG_COLUMNS if any(d in c for c in doc["diag"])]
        md += ["", "## Diagnostic: where the time goes (iso us, same graph harness; blocks/SM = driver occupancy)", "",
               "- full = the kernel; read_only = the same copies, waits and reduction without dequantization / MMAs; "
               "read_no_stage = read_only without staging x into shared memory; x_first = x staged before the first "
               "weight copies are issued (iso only: ignores PDL's order); x_first_read = both", "",
               "| shape | M | config | blocks/SM | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]  # fmt: skip
        for c in doc["diag"]:
            md.append(f"| {c['shape']} | {c['M']} | {c['cfg'].replace('CuConfig', '')} | {c.get('occ_100', '-')} | "
                      + " | ".join(_show(c.get(d)) for d in cols) + " |")  # fmt: skip
    md += ["", f"## Chains under PDL ({LAYERS} layers of distinct weights in one graph; us per GEMV = chain time / GEMVs;"
           " % copy = packed bytes / chain time / copy bandwidth; bf16 launched plainly)", "",
           "| chain | M | bf16 per GEMV | variant | per GEMV pdl (iso) | % copy pdl (iso) | x bf16 pdl (iso) | configs |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in doc["chains"]:
        g = 2 if c["chain"] == "up/down" else 4
        for var in ("triton", "cu", "cu_fastest_pdl"):
            if f"{var}_pdl_us" not in c:
                continue
            p, i = c[f"{var}_pdl_us"], c[f"{var}_iso_us"]
            mb = c["MB_per_layer"] / g
            cf = ", ".join(
                short_cfg(x, False) if x.startswith("QMM") else x.replace("CuConfig", "") for x in c[f"{var}_cfgs"]
            )
            md.append(f"| {c['chain']} | {c['M']} | {c['bf16_us']:.2f} | {var} | {p:.2f} ({i:.2f}) | {pct(mb, p)} ({pct(mb, i)}) | "
                      f"{c['bf16_us'] / p:.2f} ({c['bf16_us'] / i:.2f}) | {cf} |")  # fmt: skip
    if chk:
        md += ["", "## Check (before timing)", "",
               f"- {len(chk.get('cases', []))} cases (shapes 256x128 .. 11008x4096, M 1-16, asym / sym, act-order, bf16, "
               f"cluster and plain configs, PDL off and on): {len(chk.get('failed', []))} failed, worst relative error vs "
               f"the fp32 dequantized product {chk.get('worst_err', float('nan')):.2e}; 2-GEMV PDL chain captured in a "
               f"CUDA graph: replay bit-equal to eager {chk.get('graph_pdl_equal')} (fp32 atomics: not expected), error {chk.get('graph_err', float('nan')):.2e}"]  # fmt: skip
        for f in chk.get("failed", [])[:10]:
            md.append(f"  - failed: {json.dumps(f)[:400]}")
    extra = {key: doc[key] for key in ("diag", "carveout") if doc.get(key)}
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), check=chk, bench=doc["bench"],
                                      chains=doc["chains"], **extra))  # fmt: skip


def main() -> None:
    ap = device_parser(("warm", "check", "bench"), "bash bench/kernels/cu_gemv.sh", "kernels-2026-11-30-s10-cuda")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--ms", default=",".join(map(str, MS)), help="bench: the M values")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("CU_BUDGET_S", "240")))
    run_phase(ap, dict(warm=lambda a: warm(a.out, a.shapes.split(",")), check=lambda a: check(a.out),
                       bench=lambda a: bench(a.out, a.shapes.split(","), a.budget, tuple(int(v) for v in a.ms.split(",")))), report)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
