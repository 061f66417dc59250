"""Memory of re-quantization's processes on the CPU (quantizer_process.py), per --quantizer-start mode: the RSS,
USS and PSS of the worker process, of the fork server (forkserver mode) and of the quantizer child while it adds
one task to an MLGPTQ checkpoint of the real SmolLM2-135M-Instruct (ensure_smollm2(), the tests' model).

  .venv/bin/python bench/onboard/quantizer_memory.py [--modes forkserver,spawn] [--interval 0.25] [--root DIR]
      [--repeat 1] [--out bench/results/x.json]
  .venv/bin/python bench/onboard/quantizer_memory.py --summarize bench/results/x.json

Each mode runs in its own worker process (a fork server belongs to the process that started it): the engine
serving the checkpoint, an EngineLoop and an OnboardManager (quantizer_start=mode, the default background limits),
as onboard_bench.py builds them, without a load. This driver samples that process and its descendants (psutil's
memory_full_info: USS = pages only this process maps, PSS = its share of shared pages) every --interval seconds:
idle before the job, during it (peaks) and once it is done (the fork server stays). The child's peak RSS is also
read from its VmHWM (exact; the sampled peaks can miss a short spike). The initial checkpoint is built once, in a
separate process, and reused by both modes (--root keeps it for a rerun).

`forkserver-freeze` (an experiment, not a worker setting): forkserver with gc_freeze_preload.py added to the fork
server's preload, so the objects the preload made sit in the collector's permanent generation before any fork.

A mode may name what is done to release memory (onboard/memory.py) as `<start>:<steps>`, steps `none` or
`gc`, `trim`, `gc+trim`: the child runs them after each layer (quantizer_process.AFTER_LAYER) and, when they
include `trim`, the worker trims once the job's host copies are dropped (manager.AFTER_JOB). A bare `<start>`
runs the worker's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROLES = ("worker", "fork server", "quantizer child", "resource tracker")
MIB = 1 << 20


def role_of(proc: psutil.Process, worker_pid: int, server_pids: set[int]) -> str:
    cmd = " ".join(proc.cmdline())
    if proc.pid == worker_pid:
        return "worker"
    if "multiprocessing.forkserver" in cmd and proc.ppid() == worker_pid:
        server_pids.add(proc.pid)
        return "fork server"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if proc.ppid() in server_pids or "spawn_main" in cmd:
        return "quantizer child"
    return "other"


def vm_hwm(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib * 1024


def sample(worker_pid: int, server_pids: set[int]) -> dict[str, dict[str, int]]:
    """One sample: role -> {pid, rss, uss, pss, hwm} (bytes), the largest process of a role when several."""
    out: dict[str, dict[str, int]] = {}
    try:
        top = psutil.Process(worker_pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            role = role_of(p, worker_pid, server_pids)
            m = p.memory_full_info()
            cpu = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        row = {"pid": p.pid, "rss": m.rss, "uss": m.uss, "pss": m.pss, "hwm": vm_hwm(p.pid) or m.rss,
               "cpu_ms": int(1000 * (cpu.user + cpu.system)), "sys_ms": int(1000 * cpu.system)}
        if role not in out or row["rss"] > out[role]["rss"]:
            out[role] = row
    return out


def peaks(samples: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, float]]:
    got: dict[str, dict[str, float]] = {}
    for s in samples:
        for role, row in s.items():
            cur = got.setdefault(role, {"rss_mib": 0.0, "uss_mib": 0.0, "pss_mib": 0.0, "hwm_mib": 0.0})
            for k in ("rss", "uss", "pss", "hwm"):
                cur[f"{k}_mib"] = max(cur[f"{k}_mib"], row[k] / MIB)
    return got


def mib(s: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    return {role: {f"{k}_mib": row[k] / MIB for k in ("rss", "uss", "pss")} for role, row in s.items()}


def measure_mode(mode: str, paths: dict[str, str], interval: float, idle_s: float) -> dict[str, Any]:
    args = [sys.executable, str(Path(__file__).resolve()), "worker", "--mode", mode, "--paths", json.dumps(paths)]
    env = dict(os.environ)
    if mode.startswith("forkserver-freeze"):  # the fork server imports its preload from PYTHONPATH, not the worker's sys.path
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    worker = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert worker.stdin is not None and worker.stdout is not None
    ready = json.loads(worker.stdout.readline())
    assert ready["phase"] == "ready", ready
    servers: set[int] = set()
    time.sleep(idle_s)
    idle = sample(worker.pid, servers)
    worker.stdin.write("go\n")
    worker.stdin.flush()
    during: list[dict[str, dict[str, int]]] = []
    done: dict[str, Any] | None = None
    sel = selectors.DefaultSelector()
    sel.register(worker.stdout, selectors.EVENT_READ)
    while done is None:
        during.append(sample(worker.pid, servers))
        if sel.select(timeout=interval):
            done = json.loads(worker.stdout.readline())
    time.sleep(idle_s)
    after = sample(worker.pid, servers)
    worker.stdin.write("exit\n")
    worker.stdin.flush()
    worker.wait(60)
    child_pids = {s["quantizer child"]["pid"] for s in during if "quantizer child" in s}
    # the child's CPU seconds (user + system, and system alone) at its last sample: less sensitive than the job's
    # wall time to other load on the machine (misses at most one sampling interval)
    child_cpu = {k: max((s["quantizer child"][k] for s in during if "quantizer child" in s), default=0) / 1000
                 for k in ("cpu_ms", "sys_ms")}
    return {
        "mode": mode, "job": done, "samples": len(during), "quantizer_child_pids": sorted(child_pids),
        "child_cpu_s": child_cpu["cpu_ms"], "child_sys_s": child_cpu["sys_ms"],
        "idle": mib(idle), "peak_during": peaks(during), "after": mib(after),
    }


def setup(root: Path) -> dict[str, str]:
    """The base model, an MLGPTQ checkpoint of two tasks and a third task to add (as onboard_bench.py)."""
    sys.path.insert(0, str(HERE))
    from inlaid_worker.quant import QuantSpec, TaskData, quantize_checkpoint
    from inlaid_worker.quant.calib import load_calibration
    from onboard_bench import TASKS  # type: ignore[import-not-found]
    from onboard_bench import setup as bench_setup
    from transformers import AutoTokenizer

    base, adapters, calibs = bench_setup("smollm2", root, 8, 3, 0)
    ckpt = root / "ckpt"
    if not (ckpt / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(base)
        tasks = [TaskData(n, adapters[n], load_calibration(calibs[n], tok, 256)) for n in TASKS[:2]]
        quantize_checkpoint(base, ckpt, "mlgptq", QuantSpec(bits=4, group_size=64), tasks)
    name = TASKS[2]
    return {"base": str(base), "ckpt": str(ckpt), "root": str(root), "task": name,
            "adapter": str(adapters[name]), "calib": str(calibs[name])}


def worker(mode: str, paths: dict[str, str]) -> None:
    """The measured worker process: serves the checkpoint, adds one task when told "go" on stdin."""
    from inlaid_worker.config import WorkerConfig
    from inlaid_worker.onboard.manager import AddRequest, OnboardManager
    from inlaid_worker.onboard.setup import versions_of
    from inlaid_worker.server.app import build_engine
    from inlaid_worker.server.engine_loop import EngineLoop

    root = Path(paths["root"])
    start, _, steps = mode.partition(":")
    if steps:  # the release steps to measure instead of the defaults
        from inlaid_worker.onboard import manager as manager_mod
        from inlaid_worker.onboard import quantizer_process as qp_mod

        qp_mod.AFTER_LAYER = () if steps == "none" else tuple(steps.split("+"))
        manager_mod.AFTER_JOB = ("trim",) if "trim" in qp_mod.AFTER_LAYER else ()
    if start == "forkserver-freeze":  # the experiment: gc.freeze() in the fork server after its preload
        from inlaid_worker.onboard import quantizer_process

        quantizer_process.PRELOAD = (*quantizer_process.PRELOAD, "gc_freeze_preload")  # on PYTHONPATH (measure_mode)
        start = "forkserver"
    cfg = WorkerConfig(model=paths["base"], port=0, kv_cache_bytes=64 << 20, checkpoint=paths["ckpt"],
                       checkpoint_store=str(root / f"versions-{mode.replace(':', '-')}-{time.time_ns()}"),
                       quantizer_start=start)
    engine = build_engine(cfg, Path(paths["base"]))
    loop = EngineLoop(engine)
    loop.start()
    manager = OnboardManager(loop.call, engine.runner, versions_of(cfg), paths["base"], engine.tokenizer.hf,
                             quantizer_start=cfg.quantizer_start)
    print(json.dumps({"phase": "ready"}), flush=True)
    assert sys.stdin.readline().strip() == "go"
    t0 = time.perf_counter()
    job = manager.submit([AddRequest(paths["task"], paths["adapter"], paths["calib"])], [])
    while not job.finished:
        time.sleep(0.05)
    last = job.events[-1]
    print(json.dumps({"phase": "done", "final": last.stage, "message": last.message,
                      "version": last.checkpoint_version, "seconds": time.perf_counter() - t0}), flush=True)
    sys.stdin.readline()
    loop.stop()


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| mode | process | idle RSS / USS | peak RSS / USS / PSS (sampled) | peak RSS (VmHWM) | after RSS / USS |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        for role in ROLES:
            pk = r["peak_during"].get(role)
            if pk is None:
                continue
            idle, after = r["idle"].get(role), r["after"].get(role)
            fmt = lambda x: "–" if x is None else f"{x['rss_mib']:.0f} / {x['uss_mib']:.0f}"  # noqa: E731
            lines.append(f"| {r['mode']} | {role} | {fmt(idle)} | {pk['rss_mib']:.0f} / {pk['uss_mib']:.0f} / "
                         f"{pk['pss_mib']:.0f} | {pk['hwm_mib']:.0f} | {fmt(after)} |")
    return "\n".join(lines) + "\n\n(MiB)"


def summary(runs: list[dict[str, Any]]) -> str:
    """Per mode and process over the repeats: median [min-max] of the idle RSS, the peak RSS (VmHWM), the peak USS,
    RSS / USS once the job is done and (worker row) the job's seconds."""
    import statistics

    def cell(xs: list[float]) -> str:
        return f"{statistics.median(xs):.0f} [{min(xs):.0f}-{max(xs):.0f}]" if xs else "–"

    lines = ["| mode | process | runs | idle RSS | peak RSS (VmHWM) | peak USS | RSS / USS once done | job s (worker), "
             "CPU s (child) |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        of_mode = [r for r in runs if r["mode"] == mode]
        for role in ROLES[:3]:
            peak = [r["peak_during"][role] for r in of_mode if role in r["peak_during"]]
            if not peak:
                continue
            idle = [r["idle"][role]["rss_mib"] for r in of_mode if role in r["idle"]]
            after = [r["after"][role] for r in of_mode if role in r["after"]]
            done = cell([a["rss_mib"] for a in after]) + " / " + cell([a["uss_mib"] for a in after]) if after else "exited"
            secs = cell([r["job"]["seconds"] for r in of_mode]) if role == "worker" else ""
            if role == "quantizer child" and all("child_cpu_s" in r for r in of_mode):
                secs = "CPU " + cell([r["child_cpu_s"] for r in of_mode]) + ", sys " + cell(
                    [r["child_sys_s"] for r in of_mode])
            lines.append(f"| {mode} | {role} | {len(peak)} | {cell(idle)} | {cell([p['hwm_mib'] for p in peak])} | "
                         f"{cell([p['uss_mib'] for p in peak])} | {done} | {secs} |")
    return "\n".join(lines) + "\n\n(MiB; seconds; median [min-max] over the runs)"


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--mode", required=True)
    w.add_argument("--paths", required=True)
    ap.add_argument("--modes", default="forkserver,spawn")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--idle", type=float, default=3.0, help="seconds before a job and after it, before sampling")
    ap.add_argument("--repeat", type=int, default=1, help="measure every mode this many times (interleaved)")
    ap.add_argument("--root", type=Path, default=None, help="reuse this set-up directory (made when absent)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--summarize", type=Path, default=None, help="print the summary of this results JSON and exit")
    args = ap.parse_args()
    if args.summarize is not None:
        print(summary(json.loads(args.summarize.read_text())["runs"]))
        return
    if args.cmd == "worker":
        worker(args.mode, json.loads(args.paths))
        return
    root = args.root or Path(tempfile.mkdtemp(prefix="quantizer-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    got = subprocess.run([sys.executable, "-c", f"import sys, json; sys.path.insert(0, {str(HERE)!r}); "
                          f"from quantizer_memory import setup; from pathlib import Path; "
                          f"print(json.dumps(setup(Path({str(root)!r}))))"], check=True, capture_output=True, text=True)
    paths = json.loads(got.stdout.strip().splitlines()[-1])
    setup_s = time.perf_counter() - t0
    runs = [measure_mode(m, paths, args.interval, args.idle) for _ in range(args.repeat) for m in args.modes.split(",")]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": f"{platform.node()} {platform.machine()}",
        "cpus": psutil.cpu_count(), "model": paths["base"], "setup_s": setup_s, "interval_s": args.interval,
        "command": " ".join(sys.argv), "python": platform.python_version(),
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    print(table(runs))
    print(summary(runs))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
