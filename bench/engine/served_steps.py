"""Served engine steps for the simulator's cost model: the worker's real LLMEngine (scheduler, adapter residency,
step builder, runner, sampler, detokenizer) serving a trace in process, every engine step timed with its
composition. The points feed bench/sim/calibrate_h200.py (cost_points: prefill_tokens, decode_seqs,
distinct_adapters, rank, kv_tokens, step_s; served_shape.py says how a step is counted).

Model: random_model.py's Llama-2-7B shape, 4-bit g128 packed weights on the triton backend with the runner's
defaults (decode and prefill/mixed CUDA graphs, PDL; INLAID_QMM_TUNED=1 for the shipped quant_matmul picks), one
random rank-16 q/k/v/o adapter per task of the trace, registered in host memory, --adapter-slots of them on the
device (the engine loads the others on demand). Requests: the trace's prompt lengths (random token ids), greedy,
ignore_eos, max_tokens = its output length (as bench/load and the sched-real runs ask). Arrivals follow the trace
on the wall clock; while the engine is idle the clock jumps to the next arrival (no device time is spent waiting).
A step that compiled a kernel (a new entry in the Triton cache folder) or captured a CUDA graph is kept in `steps`
with one_off=true and left out of `cost_points`; the trace clock stops during such steps (on a fresh machine they
take 2-7 s each, ~55 s in all: the first H200 run, without the pause, served its light-load segments as one
overload). Each step also records where its wall time went (HostPhases): `pre_ms` (engine.step up to the runner:
scheduling, adapter slots, building the StepInput), `launch_ms` (the runner's execute_device call: staging, graph
replay or eager launches), `post_ms` (the rest: device sampling, the tokens' wait, detokenizing) and, on CUDA,
`fwd_gpu_ms` (CUDA events around the runner's call: the forward's GPU span), so 1 - fwd_gpu_ms / step ms is the part
of the step the forward does not cover (the host share; served_report.host_table).
--grid rows:adapters:prompt,... first serves batches of chosen shapes to the end (run_grid). Stops at
the end of the trace or after --max-seconds (of the grid, then of the trace).
Writes served-<date>[-tag].{json,md} under --out (the JSON after every 500 steps too).

  H200:  node bench/sim/served-trace.js --tasks 100 --out T.jsonl   (here; the trace travels with the call)
         INLAID_QMM_TUNED=1 PYTHONPATH=workers python3 bench/engine/served_steps.py --trace T.jsonl --out DIR \
             --kv-gb 80 --max-seconds 85
         INLAID_QMM_TUNED=1 PYTHONPATH=workers python3 bench/engine/served_steps.py --tasks 100 --kv-gb 80 \
             --grid 32:32:256,32:4:256,8:8:512,1:1:512,128:32:128 --out DIR --max-seconds 50
  CPU check (tiny random Llama, fp32, torch backend; workers/tests/bench/test_served_steps.py):
         PYTHONPATH=workers python3 bench/engine/served_steps.py --tiny --trace T.jsonl --out DIR
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onboard"))
from h200_setup import word_tokenizer  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from random_model import ATTN, SHAPES, make_runner, random_adapter, write_config  # noqa: E402
from served_report import COST_KEYS, to_markdown  # noqa: E402
from served_shape import Counters, one_off, step_path, step_shape  # noqa: E402

BLOCK = 16


def read_trace(path: Path, max_len: int) -> list[dict]:
    """Trace records sorted by arrival; prompt + output capped at max_len (the output is cut)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        r["prompt_tokens"] = max(1, min(int(r["prompt_tokens"]), max_len - 1))
        r["output_tokens"] = max(1, min(int(r["output_tokens"]), max_len - r["prompt_tokens"]))
    return sorted(rows, key=lambda r: r["arrival_s"])


def build_engine(args: argparse.Namespace, config_dir: Path, tasks: list[str]) -> LLMEngine:
    shape, dev = SHAPES[args.shape], args.device_
    el = torch.empty((), dtype=args.dtype_).element_size()
    per_block = shape.layers * 2 * BLOCK * shape.kv_heads * (shape.hidden // shape.heads) * el
    blocks = int(args.kv_gb * 2**30 // per_block)
    runner = make_runner(config_dir, args.quant, dev, args.dtype_, blocks, BLOCK, args.adapter_slots, args.backend,
                         dev.type == "cuda")  # fmt: skip
    limits = EngineLimits(BLOCK, blocks, args.max_num_seqs, args.max_batched_tokens, min(args.max_len, blocks * BLOCK),
                          args.adapter_slots, True)  # fmt: skip
    # async scheduling off: each step is timed to its end (a device sync) and recorded from schedule()'s composition
    engine = LLMEngine(runner, PromptTokenizer(word_tokenizer(shape.vocab)), limits, base_model_id="base",
                       eos_token_ids=set(), async_scheduling=False)  # fmt: skip
    for i, task in enumerate(tasks):
        engine.add_adapter(task, random_adapter(runner.config, args.rank, ATTN, seed=1000 + i), args.rank, ATTN)
    return engine


def cache_dir() -> Path:
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def tune_count() -> int:
    """Autotuned keys so far (served_probe.tune_count; 0 where the Triton kernels are not importable)."""
    try:
        from served_probe import tune_count as count
    except ImportError:
        return 0
    return count()


def counters(runner) -> Counters:  # type: ignore[no-untyped-def]
    folder = cache_dir()
    pg = runner.prefill_graph_stats
    return Counters(len(os.listdir(folder)) if folder.is_dir() else 0, runner.graph_captures, int(pg["captures"]),
                    int(pg["runs"]), runner.adapter_stats().misses, tune_count())  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class HostPhases:
    """Wraps the runner's execute_device (an instance attribute: engine.step looks it up every step) to time the
    step's phases: host time before the runner and inside its call, and the forward's GPU span (two CUDA events
    around the call; read after the step's sync)."""

    def __init__(self, runner, device: torch.device) -> None:  # type: ignore[no-untyped-def]
        self.t0 = 0.0
        self.pre_s = self.launch_s = -1.0
        cuda = device.type == "cuda"
        self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else None
        real = runner.execute_device

        def timed(step):  # type: ignore[no-untyped-def]
            t_in = time.perf_counter()
            if self._events is not None:
                self._events[0].record()
            out = real(step)
            if self._events is not None:
                self._events[1].record()
            self.pre_s, self.launch_s = t_in - self.t0, time.perf_counter() - t_in
            return out

        runner.execute_device = timed

    def start(self, t0: float) -> None:
        self.t0, self.pre_s, self.launch_s = t0, -1.0, -1.0

    def fields(self, step_s: float) -> dict:
        """The step's phases in ms (after its sync); {} when the runner was not called."""
        if self.pre_s < 0:
            return {}
        out = dict(pre_ms=1e3 * self.pre_s, launch_ms=1e3 * self.launch_s,
                   post_ms=1e3 * (step_s - self.pre_s - self.launch_s))  # fmt: skip
        if self._events is not None:
            out["fwd_gpu_ms"] = self._events[0].elapsed_time(self._events[1])
        return out


class Served:
    """Steps an engine through a trace on the wall clock and records every step."""

    def __init__(self, engine: LLMEngine, args: argparse.Namespace) -> None:
        self.engine, self.args = engine, args
        self.steps: list[dict] = []
        self.requests: dict[str, dict] = {}
        self._last: dict = {}
        self.phase = "warmup"
        self.phases = HostPhases(engine.runner, args.device_) if hasattr(engine.runner, "execute_device") else None
        self.probe = None
        if args.probe_at or args.probe_keep:  # phase timers, profiles and replays of eager steps
            from served_probe import EagerProbe

            self.probe = EagerProbe(engine.runner, args.out, args.probe_at, args.probe_keep, args.probe_min_tokens)
        schedule = engine.scheduler.schedule

        def observed():  # type: ignore[no-untyped-def]  # the step's composition, before it runs
            out = schedule()
            self._last = dict(step_shape(out.chunks, args.rank), preempted=len(out.preempted))
            if self.probe is not None:
                self.probe.before_step(self._last["rows"], self._last["prefill_tokens"] + self._last["decode_seqs"])
            return out

        engine.scheduler.schedule = observed  # type: ignore[method-assign]

    def add(self, rid: str, r: dict, now: float) -> None:
        vocab = self.engine.runner.config.vocab_size  # type: ignore[attr-defined]
        prompt = torch.randint(3, vocab, (r["prompt_tokens"],)).tolist()
        self.engine.add_request(rid, prompt, SamplingParams(max_tokens=r["output_tokens"], temperature=0.0,
                                                            ignore_eos=True), r["task"])  # fmt: skip
        self.requests[rid] = dict(arrival_s=r["arrival_s"], added_s=now, prompt=r["prompt_tokens"],
                                  output=r["output_tokens"])  # fmt: skip

    def step(self, now: float, warmup: bool) -> tuple[float, bool]:
        """One engine step; returns its wall time (0 when nothing ran) and whether it was one-off work."""
        runner, dev = self.engine.runner, self.args.device_
        before = counters(runner)
        self._last = {}
        t0 = time.perf_counter()
        if self.phases is not None:
            self.phases.start(t0)
        outputs = self.engine.step()
        sync(dev)
        step_s = time.perf_counter() - t0
        timed = self.phases.fields(step_s) if self.phases is not None else {}
        probed = self.probe.after_step(step_s) if self.probe is not None and self._last else {}
        for o in outputs:
            req = self.requests.get(o.request_id)
            if req is not None and o.token_ids:
                req.setdefault("first_s", now + step_s)
                if o.finish_reason is not None:
                    req["finish_s"], req["generated"] = now + step_s, o.completion_tokens
        if not self._last or self._last["rows"] == 0:
            return 0.0, False
        delta = counters(runner).since(before)
        once = one_off(delta) or warmup or bool(probed.get("profiled"))  # a profiled step is not a cost point
        self.steps.append(dict(self._last, step_s=step_s, t_s=round(now, 6), path=step_path(self._last, delta),
                               one_off=once, warmup=warmup, phase=self.phase, running=self.engine.num_running,
                               waiting=self.engine.num_waiting, **delta, **timed, **probed))  # fmt: skip
        return step_s, once


def warm_up(served: Served, tasks: list[str], prompts: list[int]) -> None:
    """A few short requests before the trace: the first compiles and captures land here (one_off anyway)."""
    for i, p in enumerate(prompts):
        served.add(f"warm{i}", dict(arrival_s=0.0, task=tasks[i % len(tasks)], prompt_tokens=p, output_tokens=4), 0.0)
    while served.engine.has_work:
        served.step(0.0, True)


def run_trace(served: Served, trace: list[dict], args: argparse.Namespace, save) -> dict:  # type: ignore[no-untyped-def]
    """Arrivals on the wall clock, which stops while a step compiles or captures (a fresh worker's one-off work
    would otherwise pile the light-load part of the trace into one overload) and jumps over idle gaps."""
    served.phase = "trace"
    if served.probe is not None:
        served.probe.armed = True
    pending = deque(trace)
    t0, skipped, paused, n, stop = time.perf_counter(), 0.0, 0.0, 0, "trace done"
    while True:
        wall = time.perf_counter() - t0
        if args.max_seconds and wall > args.max_seconds:
            stop = f"--max-seconds {args.max_seconds}"
            break
        now = wall + skipped - paused
        while pending and pending[0]["arrival_s"] <= now:
            served.add(f"r{n}", pending.popleft(), now)
            n += 1
        if not served.engine.has_work:
            if not pending:
                break
            skipped += pending[0]["arrival_s"] - now
            continue
        step_s, once = served.step(now, False)
        paused += step_s if once else 0.0
        if len(served.steps) % 500 == 0:
            save()
    return dict(stop=stop, trace_wall_s=time.perf_counter() - t0, idle_skipped_s=skipped, one_off_paused_s=paused,
                added=n, not_arrived=len(pending))  # fmt: skip


def parse_grid(text: str) -> list[tuple[int, int, int]]:
    """ "32:8:256,1:1:512" -> [(rows, distinct adapters, prompt tokens), ...]"""
    out = []
    for part in filter(None, text.split(",")):
        rows, adapters, prompt = (int(v) for v in part.split(":"))
        if rows < 1 or not 1 <= adapters <= rows or prompt < 1:
            raise ValueError(f"bad grid point {part!r}: need rows >= adapters >= 1 and prompt >= 1")
        out.append((rows, adapters, prompt))
    return out


def run_grid(served: Served, grid: list[tuple[int, int, int]], tasks: list[str], args: argparse.Namespace,
             save) -> dict:  # type: ignore[no-untyped-def]  # fmt: skip
    """Each grid point: `rows` requests at once (tasks round-robin over `adapters` of them, a new set of tasks per
    point so that their adapters are loaded as in serving), served to the end: chunked prefill, mixed steps while
    the first rows decode, then --grid-decode decode steps of all rows. Stops starting points after --max-seconds."""
    served.phase = "grid"
    t0, done, first = time.perf_counter(), 0, 0
    for rows, adapters, prompt in grid:
        if args.max_seconds and time.perf_counter() - t0 > args.max_seconds:
            break
        for i in range(rows):
            r = dict(arrival_s=0.0, task=tasks[(first + i % adapters) % len(tasks)], prompt_tokens=prompt,
                     output_tokens=args.grid_decode + 1)  # fmt: skip
            served.add(f"g{done}-{i}", r, time.perf_counter() - t0)
        first += adapters
        while served.engine.has_work:
            served.step(time.perf_counter() - t0, False)
        done += 1
        save()
    return dict(grid_points=done, of=len(grid), grid_wall_s=time.perf_counter() - t0)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, help="JSONL trace (bench/sim/served-trace.js)")
    ap.add_argument("--grid", type=parse_grid, default=[], help="rows:adapters:prompt,... points served before it")
    ap.add_argument("--grid-decode", type=int, default=16, help="decode steps of every grid point")
    ap.add_argument("--tasks", type=int, default=100, help="tasks (adapters) when there is no trace")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tag", default="")
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama, fp32 on the CPU (a check, no timings)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--quant", default="int4", help="int4 | int3 | fp16 (random_model.py)")
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--adapter-slots", type=int, default=32, help="device adapter slots (= the engine's max LoRAs)")
    ap.add_argument("--max-num-seqs", type=int, default=256, help="rows per step (the simulator's max_batch_rows)")
    ap.add_argument("--max-batched-tokens", type=int, default=2048, help="tokens per step (the worker's default)")
    ap.add_argument("--max-len", type=int, default=4096, help="context limit (prompt + output)")
    ap.add_argument("--kv-gb", type=float, default=100.0, help="KV cache size")
    ap.add_argument("--max-seconds", type=float, default=0.0, help="stop the trace after S s of wall time (0 = none)")
    ap.add_argument("--probe-at", type=lambda v: {int(x) for x in v.split(",") if x}, default=set(),
                    help="profile these likely-eager trace steps (1 = the first; served_probe.py)")  # fmt: skip
    ap.add_argument("--probe-keep", type=int, default=0, help="keep the last K eager trace steps' inputs, replay them")
    ap.add_argument("--probe-min-tokens", type=int, default=1024, help="profile steps of more tokens (eager)")
    ap.add_argument("--replay-seconds", type=float, default=30.0, help="time budget of the replays")
    ap.add_argument("--warmup-prompts", default="48,300,900,1800", help="prompt lengths of the warm-up requests")
    if "--tiny" in sys.argv:
        ap.set_defaults(shape="tiny", quant="fp16", backend="torch", device="cpu", kv_gb=0.01, max_len=512,
                        max_num_seqs=16, max_batched_tokens=256, adapter_slots=4, warmup_prompts="8,40")  # fmt: skip
    args = ap.parse_args()
    if args.trace is None and not args.grid:
        ap.error("give --trace, --grid or both")
    args.device_ = torch.device(args.device)
    args.dtype_ = torch.float16 if args.device_.type == "cuda" else torch.float32
    return args


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    if args.device_.type == "cpu":
        torch.set_num_threads(1)
        if os.environ.get("TRITON_INTERPRET") == "1":  # the triton backend on the CPU (as bench_decode.py)
            sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
            from cases import _patch_interpreter_for_numpy  # Triton 3.6 interpreter vs numpy >= 2.4

            _patch_interpreter_for_numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    trace = read_trace(args.trace, args.max_len) if args.trace else []
    tasks = sorted({r["task"] for r in trace}) or [f"task-{i:03d}" for i in range(args.tasks)]
    date = dt.date.today().isoformat()
    dev = args.device_
    meta = dict(date=date, started_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})",
                torch=torch.__version__, shape=args.shape, quant=args.quant, backend=args.backend, rank=args.rank,
                adapter_slots=args.adapter_slots, tasks=len(tasks), max_num_seqs=args.max_num_seqs,
                max_batched_tokens=args.max_batched_tokens, kv_gb=args.kv_gb, trace=str(args.trace),
                grid=args.grid, grid_decode=args.grid_decode,
                trace_requests=len(trace), qmm_tuned=os.environ.get("INLAID_QMM_TUNED", "1"),
                env={k: v for k, v in os.environ.items() if k.startswith("INLAID_")})  # fmt: skip
    stem = args.out / f"served-{date}{'-' + args.tag if args.tag else ''}"
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()  # the model's config.json, for the whole run
    engine = build_engine(args, write_config(SHAPES[args.shape], Path(tmp.name) / "model"), tasks)
    meta["setup_s"] = time.perf_counter() - t_start
    meta["kv_blocks"] = engine.limits.num_kv_blocks
    meta["prefill_graphs"] = bool(getattr(engine.runner, "prefill_graphs", False))
    served = Served(engine, args)

    def save() -> None:
        points = [{k: s[k] for k in COST_KEYS} for s in served.steps if not s["one_off"]]
        doc = dict(meta=meta, cost_points=points, steps=served.steps, requests=served.requests)
        stem.with_suffix(".json").write_text(json.dumps(doc))

    t1 = time.perf_counter()
    warm_up(served, tasks, [int(v) for v in args.warmup_prompts.split(",") if v])
    meta["warmup_s"] = time.perf_counter() - t1
    if args.grid:
        meta["grid"] = run_grid(served, args.grid, tasks, args, save)
    if trace:
        meta["run"] = run_trace(served, trace, args, save)
    if served.probe is not None:
        save()
        meta["replay"] = served.probe.replay(args.replay_seconds)
        (args.out / "eager-profile.txt").write_text("\n\n".join(served.probe.tables) + "\n")
    meta["wall_s"] = time.perf_counter() - t_start
    save()
    md = to_markdown(meta, served.steps, served.requests)
    stem.with_suffix(".md").write_text(md)
    print(md)
    tmp.cleanup()


if __name__ == "__main__":
    main()
