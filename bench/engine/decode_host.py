"""Host time of a graph-replayed decode step (issue 4: the CPU must not set the pace), today's code against the code
before session 10 (decode_host_head.py, kept verbatim), alternating step by step on ONE runner: the same graphs,
the same GPU work, only the host code differs.

Parts (each prints a table; all numbers go to --out/decode-host.json):
1. ops: the host cost of single operations the step uses (torch ops on small CPU tensors, numpy, tolist; on CUDA
   also current_stream, an event's record / synchronize, the pinned copy's enqueue, a tiny graph's replay).
2. stages: each stage of the runner's graph path with a clock read between them (median us), head and today.
3. runner: execute_device's host time (call to return: the replay is launched, the GPU runs on), execute_device
   plus a sync (the step's wall time), and execute (host logits) - head / today alternating, median of --reps.
4. engine: an LLMEngine decode loop at batch 1 (one request, greedy, ignore_eos, 512-token prompt) with the
   runner's path switched head / today every step; per phase: schedule, adapters, build (build_step_input),
   runner (execute_device), sample (sample_batch / sample_rows: launches, the tokens' copy and wait),
   detok, post (the rest of _postprocess), other; and the step's wall time.
5. waits (--waits sync,spin,yield): today's execute_device right after the host waited for the GPU in each way
   (the driver's synchronize, an event polled in a tight loop, polled with time.sleep(0)): does a host that never
   leaves the CPU while it waits run the next step's host code faster?

Runner: on CUDA the random Llama-2-7B int4 runner of the s9 benches (random_model.py, 1024 KV blocks, fp16; run with
INLAID_QMM_TUNED=1); on the CPU a tiny random Llama (vocab 32000, 4096 positions: the same 256-column block
table) whose decode graphs are fakes (a replay does nothing, events are no-ops) - for the host code's share only.

  CPU:  nice -n 10 .venv/bin/python bench/engine/decode_host.py --out /tmp/dh
  H200: source bench/kernels/device_env.sh; INLAID_QMM_TUNED=1 python3 bench/engine/decode_host.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import decode_host_head as head  # noqa: E402
from inlaid_worker.model import decode_graphs as dgm  # noqa: E402
from inlaid_worker.model.step_input import StepInput  # noqa: E402
from llama_shapes import LLAMA2_7B, Shape  # noqa: E402
from phase_clock import phase_timer, wrap_engine_phases  # noqa: E402
from random_model import make_runner, random_weights, write_config  # noqa: E402
from steps import BLOCK, make_step  # noqa: E402

CPU_SHAPE = Shape(128, 256, 2, 4, 2, 32000)
clock = time.perf_counter


def med_us(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1e6, 2)


# ---- 1. single operations -------------------------------------------------------------------------------------
def op_costs(dev: torch.device, n: int) -> dict[str, float]:
    t = torch.tensor([5], dtype=torch.int64)
    q = torch.tensor([0, 1], dtype=torch.int64)
    big = torch.arange(256, dtype=torch.int64)
    a = t.numpy()
    f = np.zeros((6, 1), dtype=np.int32)
    tab = np.zeros((1, 256), dtype=np.int32)
    bt = torch.arange(32, dtype=torch.int64).view(1, 32)
    four = [torch.tensor([i], dtype=torch.int64) for i in range(4)]
    ops: dict[str, Callable[[], object]] = {
        "int(q[-1])": lambda: int(q[-1]),
        "int(t.max())": lambda: int(t.max()),
        "bool((t >= 0).any())": lambda: bool((t >= 0).any()),
        "t.tolist()": lambda: t.tolist(),
        "max(t.tolist())": lambda: max(t.tolist()),
        "t.numpy()": lambda: t.numpy(),
        "t.numpy().max()": lambda: t.numpy().max(),
        "big.tolist() (256)": lambda: big.tolist(),
        "max(big.tolist()) (256)": lambda: max(big.tolist()),
        "int(big.numpy().max()) (256)": lambda: int(big.numpy().max()),
        "int(big.max()) (256)": lambda: int(big.max()),
        "f[0, :1] = a": lambda: f[0, :1].__setitem__(slice(None), a),
        "f[0, :1] = t.numpy()": lambda: f[0, :1].__setitem__(slice(None), t.numpy()),
        "np.stack 4 -> f[:4, :1]": lambda: np.stack([x.numpy() for x in four], out=f[:4, :1], casting="unsafe"),
        "np.maximum(a, 0, out)": lambda: np.maximum(a, 0, out=f[4, :1], casting="unsafe"),
        "f[4:, :1] = 0": lambda: f[4:, :1].__setitem__(slice(None), 0),
        "tab[:1, :32] = bt.numpy()": lambda: tab[:1, :32].__setitem__(slice(None), bt.numpy()),
        "lambda creation": lambda: lambda buf: buf,
        "an inference_mode-decorated call": torch.inference_mode()(lambda: None),
        "f[0, :1] = t.tolist()": lambda: f[0, :1].__setitem__(slice(None), t.tolist()),
    }
    for b in (1, 16):  # the whole staging fill of a batch-b step: head, today (lora False / True), lists
        step = make_step(b, 1, 512, [-1] * b, 32000, 1024)
        buf = torch.zeros(b * (6 + 256), dtype=torch.int32)
        views = dgm.stage_views(buf, b, 256)
        ops |= {
            f"fill b{b}: head stage_step": lambda buf=buf, b=b, step=step: head.head_stage_step(buf, b, 256, step),
            f"fill b{b}: today": lambda buf=buf, b=b, step=step, v=views: dgm.stage_step(buf, b, 256, step, v,
                                                                                       [-1] * b),
            f"fill b{b}: today's numpy path": lambda buf=buf, b=b, step=step, v=views: numpy_fill(buf, b, step, v),
            f"fill b{b}: lists": lambda step=step, v=views: fill_lists(v, step),
        }  # fmt: skip
    if dev.type == "cuda":
        host = torch.zeros(262, dtype=torch.int32, pin_memory=True)
        d = torch.zeros(262, dtype=torch.int32, device=dev)
        ev = torch.cuda.Event()
        ev.record()
        s = torch.cuda.current_stream()
        logits = torch.zeros(1, 32000, device=dev)
        g = torch.cuda.CUDAGraph()
        x = torch.zeros(16, device=dev)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            x.add_(1)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(g):
            x.add_(1)
        idx = dev.index or 0
        ops |= {
            "torch.cuda.current_stream()": lambda: torch.cuda.current_stream(dev),
            "_cuda_getCurrentRawStream": lambda: torch._C._cuda_getCurrentRawStream(idx),
            "event.record(stream)": lambda: ev.record(s),
            "event.synchronize() (done)": lambda: ev.synchronize(),
            "event.query() (done)": lambda: ev.query(),
            "dev.copy_(pinned, non_blocking)": lambda: d.copy_(host, non_blocking=True),
            "logits[:1]": lambda: logits[:1],
            "tiny graph.replay()": lambda: g.replay(),
        }
    out = {}
    with torch.inference_mode():
        for name, fn in ops.items():
            for _ in range(200):
                fn()
            laps = []
            for _ in range(n):
                a0 = clock()
                fn()
                laps.append(clock() - a0)
                if dev.type == "cuda" and "replay" in name:
                    torch.cuda.synchronize()
            out[name] = med_us(laps)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return out


def numpy_fill(buf: torch.Tensor, b: int, step: StepInput, views: tuple[np.ndarray, np.ndarray]) -> None:
    """Today's stage_step through its numpy branch (the one for more than LIST_ROWS rows)."""
    rows, dgm.LIST_ROWS = dgm.LIST_ROWS, 0
    try:
        dgm.stage_step(buf, b, 256, step, views)
    finally:
        dgm.LIST_ROWS = rows


def fill_lists(views: tuple[np.ndarray, np.ndarray], step: StepInput) -> None:
    """A candidate staging fill (no LoRA): the four fields from host lists instead of numpy views."""
    f, tables = views
    s = step.num_seqs
    f[0, :s] = step.token_ids.tolist()
    f[1, :s] = step.positions.tolist()
    f[2, :s] = step.slot_mapping.tolist()
    f[3, :s] = step.context_lens.tolist()
    f[4:, :s] = 0
    tables[:s, : step.block_tables.shape[1]] = step.block_tables.numpy()


# ---- runners ----------------------------------------------------------------------------------------------------
class FakeGraph:
    def replay(self) -> None:
        pass


class FakeEvent:
    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


def cpu_runner(blocks: int) -> Any:
    """A tiny random Llama on the CPU whose decode graphs are fakes (DecodeGraphs with a no-op graph and events,
    capture skipped) and whose other steps return zero logits: for the host code's share only."""
    from inlaid_worker.model.config import load_model_config
    from inlaid_worker.model.runner import ModelRunner

    cfg = write_config(CPU_SHAPE, Path(tempfile.mkdtemp()) / "tiny")
    c = load_model_config(cfg)
    w = random_weights(c, "fp16", torch.device("cpu"), torch.float32)
    runner = ModelRunner(cfg, "cpu", torch.float32, blocks, BLOCK, 4, "triton", w, True)
    torch.cuda.graph_pool_handle = lambda: None  # type: ignore[assignment]
    torch.cuda.CUDAGraph = FakeGraph  # type: ignore[assignment,misc]
    dgm.new_event = FakeEvent
    dg = dgm.DecodeGraphs(c, runner.kv_cache, runner._inv_freq, torch.float32, runner._width, runner._adapters.pools,
                          pdl_mode=0)  # fmt: skip

    def capture(weights: Any, g: Any, b: int, with_lora: bool, fusion: str) -> Any:
        dg.captures += 1
        return dgm._Graph(g.graph, g.staging, torch.zeros(b, c.vocab_size), (), views=g.views)

    dg._capture = capture  # type: ignore[method-assign]
    runner._graphs = dg
    runner.eager_inputs = lambda step: step  # type: ignore[method-assign,assignment,return-value]
    runner.eager_logits = lambda step: torch.zeros(step.num_seqs, c.vocab_size)  # type: ignore[method-assign,attr-defined]
    return runner


def device_runner(dev: torch.device, blocks: int) -> Any:
    cfg = write_config(LLAMA2_7B, Path(tempfile.mkdtemp()) / "7b")
    return make_runner(cfg, "int4", dev, torch.float16, blocks, BLOCK, 4, "triton", True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


# ---- 2. stages ----------------------------------------------------------------------------------------------------
NEW_STAGES = ("check", "can_run", "ids+check_slots", "key", "send", "replay")


@torch.inference_mode()
def new_stages(runner: Any, step: StepInput) -> list[float]:
    """Today's execute_device path (ModelRunner._execute_fast -> DecodeGraphs.run) with a clock read after each of
    NEW_STAGES; the same calls in the same order (the key's two lines are run's)."""
    dg = runner._graphs
    t = [clock()]
    runner._check(step)
    t.append(clock())
    dg.can_run(step)
    t.append(clock())
    ids = step.adapter_ids.tolist()
    runner._adapters.check_slots(ids)
    t.append(clock())
    s = step.num_seqs
    b = dg._bucket_of[s]
    lora = max(ids) >= 0
    with_lora = lora and dg._pools is not None
    key = (b, with_lora, dg.pdl_for(b, with_lora), dg.fusion_for(b))
    g = dg._graphs[key]
    t.append(clock())
    views = g.views
    g.staging.send(lambda buf: dgm.stage_step(buf, b, dg._w, step, views, ids))
    t.append(clock())
    g.graph.replay()
    g.logits_rows(s)
    t.append(clock())
    return t


def stages(runner: Any, step: StepInput, dev: torch.device, n: int) -> dict[str, dict[str, float]]:
    laps: dict[str, dict[str, list[float]]] = {"head": {k: [] for k in head.HEAD_STAGES[:6]},
                                               "today": {k: [] for k in NEW_STAGES}}  # fmt: skip
    for i in range(n):
        for v in ("head", "today") if i % 2 else ("today", "head"):
            sync(dev)
            if v == "head":
                t, names = head.head_stages(runner, step, clock, False), head.HEAD_STAGES
            else:
                t, names = new_stages(runner, step), NEW_STAGES
            for k, a, z in zip(names, t, t[1:], strict=False):
                laps[v][k].append(z - a)
            laps[v].setdefault("total", []).append(t[-1] - t[0])
    sync(dev)
    return {v: {k: med_us(x) for k, x in d.items()} for v, d in laps.items()}


# ---- 3. the runner's step ---------------------------------------------------------------------------------------
def use(runner: Any, variant: str) -> None:
    """Point runner._execute at the head replica or back at today's method."""
    if variant == "head":
        runner._execute = lambda step, host: head.head_execute(runner, step, host)
    else:
        runner.__dict__.pop("_execute", None)


def runner_times(runner: Any, step: StepInput, dev: torch.device, n: int) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, list[float]]] = {v: {"launch": [], "device_step": [], "host_step": []}
                                              for v in ("head", "today")}  # fmt: skip
    for i in range(n):
        for v in ("head", "today") if i % 2 else ("today", "head"):
            use(runner, v)
            sync(dev)
            a = clock()
            runner.execute_device(step)
            b = clock()
            sync(dev)
            c = clock()
            res[v]["launch"].append(b - a)
            res[v]["device_step"].append(c - a)
            sync(dev)
            a = clock()
            runner.execute(step)
            res[v]["host_step"].append(clock() - a)
    use(runner, "today")
    return {v: {k: med_us(x) for k, x in d.items()} for v, d in res.items()}


# ---- 5. how the host waits for the GPU ---------------------------------------------------------------------------
WAITS = ("sync", "spin", "yield")


def wait_gpu(mode: str, dev: torch.device) -> None:
    """Wait for the device's work: "sync" = torch.cuda.synchronize (the driver's wait); "spin" = an event polled in
    a tight loop (the thread never leaves the CPU); "yield" = polled with time.sleep(0) between (the GIL and the
    core are offered to others at every poll)."""
    if dev.type != "cuda" or mode == "sync":
        sync(dev)
        return
    ev = torch.cuda.Event()
    ev.record()
    if mode == "spin":
        while not ev.query():
            pass
    else:
        while not ev.query():
            time.sleep(0)


def wait_times(runner: Any, step: StepInput, dev: torch.device, n: int, modes: list[str]) -> dict[str, Any]:
    """Today's execute_device after each way of waiting for the previous step: its host time (launch) and its
    stages (NEW_STAGES), modes alternating."""
    laps: dict[str, dict[str, list[float]]] = {m: {k: [] for k in (*NEW_STAGES, "total", "launch")} for m in modes}
    for i in range(n):
        order = modes if i % 2 else modes[::-1]
        for m in order:
            runner.execute_device(step)
            wait_gpu(m, dev)
            a = clock()
            runner.execute_device(step)
            laps[m]["launch"].append(clock() - a)
            wait_gpu(m, dev)
            t = new_stages(runner, step)
            for k, x, z in zip(NEW_STAGES, t, t[1:], strict=False):
                laps[m][k].append(z - x)
            laps[m]["total"].append(t[-1] - t[0])
    sync(dev)
    return {m: {k: med_us(x) for k, x in d.items()} for m, d in laps.items()}


# ---- 4. the engine at batch 1 -------------------------------------------------------------------------------------
ENGINE_PHASES = ("schedule", "adapters", "build", "runner", "sample", "detok", "post", "commit", "other")


def engine_times(runner: Any, dev: torch.device, n: int, prompt_len: int,
                 variants: tuple[str, ...] = ("head", "today")) -> dict[str, Any]:  # fmt: skip
    """variants: "head" / "today" (the runner's path); they take turns step by step."""
    import inlaid_worker.engine.engine as eng
    from host_overhead import word_tokenizer
    from inlaid_worker.engine.detokenizer import IncrementalDetokenizer
    from inlaid_worker.engine.engine import EngineLimits, LLMEngine
    from inlaid_worker.engine.sampling_params import SamplingParams
    from inlaid_worker.engine.tokenizer import PromptTokenizer

    vocab = runner.config.vocab_size
    limits = EngineLimits(BLOCK, runner.num_kv_blocks, 8, 2048, 4096, 0, True)
    engine = LLMEngine(  # the synchronous step's phases (async scheduling: bench/engine/s11_async.py)
        runner, PromptTokenizer(word_tokenizer(vocab)), limits, base_model_id="base", eos_token_ids=set(),
        async_scheduling=False,
    )
    acc = dict.fromkeys(ENGINE_PHASES, 0.0)

    wrap = phase_timer(acc, clock)

    wrap_engine_phases(engine, wrap)
    runner.execute_device = wrap("runner", runner.execute_device)
    originals = (eng.build_step_input, eng.sample_batch, eng.sample_rows, IncrementalDetokenizer.add)
    eng.build_step_input = wrap("build", eng.build_step_input)  # type: ignore[attr-defined]
    eng.sample_batch = wrap("sample", eng.sample_batch)  # type: ignore[attr-defined]
    eng.sample_rows = wrap("sample", eng.sample_rows)  # type: ignore[attr-defined]
    IncrementalDetokenizer.add = wrap("detok", IncrementalDetokenizer.add)  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    prompt = [int(x) for x in rng.integers(3, vocab, prompt_len)]
    engine.add_request("r", prompt, SamplingParams(max_tokens=4 * n + 64, temperature=0.0, ignore_eos=True), "")
    while not engine.scheduler.running or engine.scheduler.running[0].num_computed_tokens < prompt_len:
        engine.step()
    for _ in range(8):  # the decode graph's capture, warm-up
        engine.step()
    per: dict[str, dict[str, list[float]]] = {v: {k: [] for k in (*ENGINE_PHASES, "total")} for v in variants}
    k_ = len(variants)
    for i in range(k_ * n):
        r = i // k_
        v = variants[(i if r % 2 == 0 else -1 - i) % k_]  # each round in turn forwards, then backwards
        use(runner, v)
        for k in acc:
            acc[k] = 0.0
        sync(dev)
        t0 = clock()
        outs = engine.step()
        total = clock() - t0
        if len(outs) != 1 or len(outs[0].token_ids) != 1:
            raise RuntimeError(f"expected one token a step, got {outs}")
        acc["post"] -= acc["sample"] + acc["detok"]
        acc["other"] = total - sum(acc[k] for k in ENGINE_PHASES if k != "other")
        for k in ENGINE_PHASES:
            per[v][k].append(acc[k])
        per[v]["total"].append(total)
    use(runner, "today")
    eng.build_step_input, eng.sample_batch, eng.sample_rows, IncrementalDetokenizer.add = originals  # type: ignore[attr-defined,misc]
    del runner.execute_device
    ctx = engine.scheduler.running[0].num_tokens if engine.scheduler.running else None
    return {"context_end": ctx, **{v: {k: med_us(x) for k, x in d.items()} for v, d in per.items()}}


def table(title: str, rows: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(rows.values())))
    for d in rows.values():
        keys += [k for k in d if k not in keys]
    lines = [f"### {title} (median us)", "", "| stage | " + " | ".join(rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{d[k]:.2f}" if k in d else "" for d in rows.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--blocks", type=int, default=1024)
    ap.add_argument("--ops", type=int, default=2000, help="timed calls per single operation")
    ap.add_argument("--stages", type=int, default=300, help="steps per variant, stage by stage")
    ap.add_argument("--reps", type=int, default=300, help="steps per variant, the runner's step")
    ap.add_argument("--engine", type=int, default=300, help="engine steps per variant (0: skip)")
    ap.add_argument("--prompt", type=int, default=511)
    ap.add_argument("--waits", default="", help="part 5: ways of waiting, e.g. sync,spin,yield (empty: skip)")
    ap.add_argument("--engine-variants", default="head,today")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    t0 = time.time()
    res: dict[str, Any] = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=args.device,
                               torch=torch.__version__, numpy=np.__version__, argv=sys.argv[1:])  # fmt: skip
    if dev.type == "cuda":
        res["device_name"] = torch.cuda.get_device_name(dev)

    def save() -> None:
        res["wall_s"] = round(time.time() - t0, 1)
        (args.out / "decode-host.json").write_text(json.dumps(res, indent=1))

    res["ops_us"] = op_costs(dev, args.ops)
    print(table("single operations", {"us": res["ops_us"]}), "\n", flush=True)
    save()
    runner = cpu_runner(args.blocks) if dev.type == "cpu" else device_runner(dev, args.blocks)
    step = make_step(1, 1, 512, [-1], runner.config.vocab_size, runner.num_kv_blocks)
    for _ in range(3):
        runner.execute_device(step)  # today's code captures the graph (head replays it)
        runner.execute(step)
    sync(dev)
    res["stages_us"] = stages(runner, step, dev, args.stages)
    print(table("runner stages, batch 1 (execute_device path)", res["stages_us"]), "\n", flush=True)
    save()
    res["runner_us"] = runner_times(runner, step, dev, args.reps)
    print(table("runner step, batch 1: launch = execute_device's host time; device_step = + sync; host_step = execute",
                res["runner_us"]), "\n", flush=True)  # fmt: skip
    save()
    if args.waits:
        res["waits_us"] = wait_times(runner, step, dev, args.stages, args.waits.split(","))
        print(table("today's execute_device after each way of waiting for the GPU", res["waits_us"]), "\n", flush=True)
        save()
    if args.engine:
        res["engine_us"] = engine_times(runner, dev, args.engine, args.prompt, tuple(args.engine_variants.split(",")))
        e = {k: v for k, v in res["engine_us"].items() if k != "context_end"}
        print(table(f"engine decode step, batch 1 (context ~{args.prompt}-{res['engine_us']['context_end']})", e),
              flush=True)  # fmt: skip
    save()
    print(f"wall {res['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
