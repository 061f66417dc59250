"""Host work per engine step (issue 4): LLMEngine.step() split by phase, with cProfile's top functions.

The model's compute is taken out: by default the engine drives a STUB runner (`PrecomputedLogits`, benchmark only)
that returns slices of one precomputed random logits tensor [rows, vocab] and maps adapters to fixed slots, so what
is timed is the engine's own host work (scheduler, adapter slots, step building, sampling on the host, detokenizing,
outputs). --runner tiny uses the real ModelRunner on a tiny random Llama instead and subtracts its time (the
`runner` phase). Never use the stub as the engine in tests.

Per scenario: `rows` requests (prompts of 256-768 random tokens, greedy, ignore_eos, a quarter with two stop strings,
tasks round-robin over --adapters adapters) are prefilled until every row decodes, then `waiting` more requests are
queued (tasks over --tasks adapters: with --max-loras resident, most wait on a slot). `churn` rows end after 1-64
more tokens, so rows finish and waiting requests are admitted (mixed steps); otherwise every step is pure decode and
the queue only waits. --steps steps are timed after that (median per phase, ms).

Phases: schedule (Scheduler.schedule), adapters (_assign_adapter_slots), build (build_step_input), runner, commit
(Scheduler.commit), sample (sample_rows / sample_batch), detok (IncrementalDetokenizer.add / flush), outputs (the
rest of _postprocess: finishing, RequestOutput), other (the step's remainder). Wrappers add ~0.2 us per call.

--variants name=PYTHONPATH,... runs the whole set in one child process per variant and repeat, interleaved (so an
old checkout, e.g. `git archive <commit> workers | tar -x -C /tmp/base`, and today's are measured in one run on the
same noisy machine). Writes --out .json (and prints a Markdown table).

  nice -n 10 .venv/bin/python bench/engine/host_overhead.py --variants base=/tmp/eh-base/workers,new=workers \
      --repeats 3 --out bench/results/host-overhead-2026-11-30.json
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

PHASES = ("schedule", "adapters", "build", "runner", "commit", "sample", "detok", "outputs", "other")
COLUMNS = (*PHASES, "host", "host_no_sample", "total")
STOPS = ("w17 w23", "w99999")  # a quarter of the rows: stop strings that never match (held-back checks every token)


def word_tokenizer(vocab: int) -> Any:
    """The H200 served run's tokenizer (bench/onboard/h200_setup.py): words "w<i>", a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1", eos_token="w2")


class PrecomputedLogits:
    """BENCHMARK-ONLY stub runner: no model; logits are slices of one random tensor. Adapters get fixed slots."""

    def __init__(self, vocab: int, max_rows: int, seed: int = 0) -> None:
        self.logits = torch.randn(max_rows, vocab, generator=torch.Generator().manual_seed(seed))
        self.slots: dict[str, int] = {}
        self.max_adapters = 0

    def execute(self, step: Any) -> torch.Tensor:
        return self.logits[: step.num_seqs]

    def add_adapter(self, name: str, adapter: Any) -> int:
        self.slots[name] = len(self.slots)
        return self.slots[name]

    def remove_adapter(self, name: str) -> None:
        self.slots.pop(name, None)

    def prepare_adapters(self, names: Iterable[str], keep: Iterable[str]) -> dict[str, int]:
        return {n: self.slots[n] for n in set(names)}


class Timers:
    def __init__(self) -> None:
        self.acc: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        acc = self.acc

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[phase] += time.perf_counter() - t0

        return timed

    def reset(self) -> None:
        for k in self.acc:
            self.acc[k] = 0.0


def build_engine(args: argparse.Namespace, rows: int, timers: Timers | None, room: int = 0) -> Any:
    import inlaid_worker.engine.engine as eng
    from inlaid_worker.engine.detokenizer import IncrementalDetokenizer
    from inlaid_worker.engine.engine import EngineLimits, LLMEngine
    from inlaid_worker.engine.tokenizer import PromptTokenizer

    blocks = rows * 96 + 256
    limits = EngineLimits(16, blocks, rows + room, 2048, 4096, args.max_loras, True)
    if args.runner == "stub":
        runner: Any = PrecomputedLogits(args.vocab, max(rows, 2048))
        tokenizer = PromptTokenizer(word_tokenizer(args.vocab))
    else:  # the real ModelRunner on a tiny random Llama (its time is the `runner` phase)
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests"))
        from factories import make_lora_adapter, make_tiny_llama
        from inlaid_worker.model.runner import ModelRunner

        d = Path(tempfile.mkdtemp()) / "tiny"
        make_tiny_llama(d, vocab=args.vocab, max_positions=4096)
        runner = ModelRunner(d, "cpu", torch.float32, blocks, 16, args.max_loras, "torch")
        tokenizer = PromptTokenizer.from_model_dir(d)
    engine = LLMEngine(runner, tokenizer, limits, base_model_id="base", eos_token_ids=set(),
                       async_scheduling=False)  # its phases wrap the synchronous step's calls  # fmt: skip
    for i in range(args.tasks):
        if args.runner == "stub":
            engine.add_adapter(f"t{i:03d}", None, 16, ("q_proj",))
        else:
            adapter = make_lora_adapter(runner.config, rank=8, targets=("q_proj", "v_proj"), seed=i)
            engine.add_adapter(f"t{i:03d}", adapter, 8, ("q_proj", "v_proj"))
    if timers is not None:
        for name in ("build_step_input", "sample_rows", "sample_batch"):
            _ORIGINALS.setdefault(f"eng.{name}", getattr(eng, name))
        for name in ("add", "flush"):
            _ORIGINALS.setdefault(f"det.{name}", getattr(IncrementalDetokenizer, name))
        sch = engine.scheduler
        sch.schedule = timers.wrap("schedule", sch.schedule)  # type: ignore[method-assign]
        sch.commit = timers.wrap("commit", sch.commit)  # type: ignore[method-assign]
        engine._assign_adapter_slots = timers.wrap("adapters", engine._assign_adapter_slots)  # type: ignore[method-assign]
        runner.execute = timers.wrap("runner", runner.execute)
        if getattr(runner, "execute_device", None) is not None:  # what the engine calls when the runner has it
            runner.execute_device = timers.wrap("runner", runner.execute_device)
        eng.build_step_input = timers.wrap("build", eng.build_step_input)  # type: ignore[attr-defined]
        eng.sample_rows = timers.wrap("sample", eng.sample_rows)  # type: ignore[attr-defined]
        eng.sample_batch = timers.wrap("sample", eng.sample_batch)  # type: ignore[attr-defined]
        engine._postprocess = timers.wrap("outputs", engine._postprocess)  # type: ignore[method-assign]
        IncrementalDetokenizer.add = timers.wrap("detok", IncrementalDetokenizer.add)  # type: ignore[method-assign]
        IncrementalDetokenizer.flush = timers.wrap("detok", IncrementalDetokenizer.flush)  # type: ignore[method-assign]
    return engine


_ORIGINALS: dict[str, Any] = {}


def unwrap() -> None:
    """Puts back the module- and class-level functions build_engine wrapped (the next scenario wraps again)."""
    import inlaid_worker.engine.engine as eng
    from inlaid_worker.engine.detokenizer import IncrementalDetokenizer

    for key, fn in _ORIGINALS.items():
        owner, name = key.split(".")
        setattr(eng if owner == "eng" else IncrementalDetokenizer, name, fn)


def request(rng: random.Random, vocab: int, task: str, max_tokens: int, stops: bool) -> tuple[list[int], Any]:
    from inlaid_worker.engine.sampling_params import SamplingParams

    prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(256, 768))]
    return prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                                  stop=STOPS if stops else ())  # fmt: skip


def setup(engine: Any, args: argparse.Namespace, rows: int, waiting: int, churn: bool, seed: int,
          blocked: bool = False) -> None:  # fmt: skip
    rng = random.Random(seed)
    for i in range(rows):
        prompt, sp = request(rng, args.vocab, f"t{i % args.adapters:03d}", 3000, i % 4 == 0)
        engine.add_request(f"run{i}", prompt, sp, f"t{i % args.adapters:03d}")
    while not all(s.num_computed_tokens == s.num_tokens - 1 for s in engine.scheduler.running) or engine.num_waiting:
        engine.step()
    if churn:  # each row ends after 1-64 more tokens
        for k, s in enumerate(engine.scheduler.running):
            object.__setattr__(s.sampling, "max_tokens", len(s.output_token_ids) + 1 + (k * 37) % 64)
    for i in range(waiting):
        task = f"t{rng.randrange(args.adapters if blocked else 0, args.tasks):03d}"
        prompt, sp = request(rng, args.vocab, task, 16 + rng.randrange(200), i % 4 == 0)
        engine.add_request(f"wait{i}", prompt, sp, task)


def scenario(args: argparse.Namespace, rows: int, waiting: int, churn: bool, blocked: bool = False) -> dict[str, Any]:
    timers = Timers()
    engine = build_engine(args, rows, timers, room=64 if blocked else 0)
    setup(engine, args, rows, waiting, churn, seed=rows * 7 + waiting, blocked=blocked)
    for _ in range(3):
        engine.step()
    if args.gc_freeze:  # what a server could do once loaded: the objects alive now are never scanned again
        gc.collect()
        gc.freeze()
    per: dict[str, list[float]] = {k: [] for k in (*PHASES, "total", "host", "host_no_sample", "gc")}
    gc_max: dict[int, float] = {}  # generation -> longest collection
    gc_ms = [0.0, 0.0]  # time in the garbage collector during the step (inside the phases above), its start

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_ms[1] = time.perf_counter()
        else:
            took = (time.perf_counter() - gc_ms[1]) * 1e3
            gc_ms[0] += took
            gc_max[info["generation"]] = max(gc_max.get(info["generation"], 0.0), took)

    gc.callbacks.append(on_gc)
    shapes: list[tuple[int, int]] = []
    for _ in range(args.steps):
        timers.reset()
        gc_ms[0] = 0.0
        t0 = time.perf_counter()
        outs = engine.step()
        total = time.perf_counter() - t0
        a = dict(timers.acc)
        a["outputs"] -= a["sample"] + a["detok"]
        a["other"] = total - sum(a[k] for k in PHASES if k != "other")
        for k in PHASES:
            per[k].append(a[k] * 1e3)
        per["total"].append(total * 1e3)
        per["host"].append((total - a["runner"]) * 1e3)
        per["host_no_sample"].append((total - a["runner"] - a["sample"]) * 1e3)
        per["gc"].append(gc_ms[0])
        shapes.append((len(outs), engine.num_waiting))
    gc.callbacks.remove(on_gc)
    if args.gc_freeze:
        gc.unfreeze()
    prof = None
    if args.profile and rows == max(args.rows):
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(args.steps):
            engine.step()
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(args.top)
        prof = buf.getvalue()
    unwrap()
    med = {k: statistics.median(v) for k, v in per.items()}
    p90 = {k: sorted(v)[int(0.9 * (len(v) - 1))] for k, v in per.items()}
    return dict(rows=rows, waiting=waiting, churn=churn, blocked=blocked, steps=args.steps, median_ms=med, p90_ms=p90,
                gc_total_ms=sum(per["gc"]), gc_max_ms=gc_max, gc_frozen=args.gc_freeze,
                outputs_per_step=statistics.median(o for o, _ in shapes), waiting_end=shapes[-1][1],
                profile=prof)  # fmt: skip


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = []
    for rows in args.rows:
        for waiting in args.waiting:
            for churn in (False, True) if waiting else (False,):
                results.append(scenario(args, rows, waiting, churn))
            if waiting and args.blocked:
                results.append(scenario(args, rows, waiting, False, blocked=True))
    json.dump(results, sys.stdout)


def queue(sc: dict[str, Any]) -> str:
    if not sc["waiting"]:
        return "-"
    return "blocked (full scan)" if sc.get("blocked") else ("churn (admits)" if sc["churn"] else "waits (rows full)")


def table(doc: dict[str, Any]) -> str:
    lines = ["| variant | rows | waiting | queue | " + " | ".join(PHASES) + " | host | host - sample | total |",
             "|---|---|---|---|" + "---|" * (len(PHASES) + 3)]  # fmt: skip
    for name, runs in doc["variants"].items():
        for i, sc in enumerate(runs[0]):
            med = {k: statistics.median(r[i]["median_ms"][k] for r in runs) for k in COLUMNS}
            cells = " | ".join(f"{med[k]:.2f}" for k in COLUMNS)
            lines.append(f"| {name} | {sc['rows']} | {sc['waiting']} | {queue(sc)} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=lambda s: [int(v) for v in s.split(",")], default=[32, 128, 256])
    ap.add_argument("--waiting", type=lambda s: [int(v) for v in s.split(",")], default=[0, 2000])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--tasks", type=int, default=100, help="adapters registered (waiting requests use all)")
    ap.add_argument("--adapters", type=int, default=32, help="adapters of the running rows")
    ap.add_argument("--max-loras", type=int, default=32)
    ap.add_argument(
        "--blocked",
        action="store_true",
        help="also: room for 64 more rows, every waiting request on a non-resident adapter (a full scan)",
    )
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after set-up (before the timed steps)")
    ap.add_argument("--runner", choices=("stub", "tiny"), default="stub")
    ap.add_argument("--profile", action="store_true", help="cProfile the largest rows' steps (top --top)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--variants", default="", help="name=PYTHONPATH,...: one child process per variant and repeat")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    variants = dict(v.split("=", 1) for v in args.variants.split(",")) if args.variants else {"cwd": "workers"}
    skip = {"--variants", "--repeats", "--out"}
    passthrough = []
    it = iter(sys.argv[1:])
    for a in it:
        if a.split("=")[0] in skip:
            if "=" not in a:
                next(it, None)
            continue
        passthrough.append(a)
    doc: dict[str, Any] = dict(
        command="nice -n 10 .venv/bin/python " + " ".join(sys.argv),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared by several sessions "
        "(noisy: other jobs run at the same time)",
        torch=torch.__version__, runner=args.runner, variants={k: [] for k in variants},
    )  # fmt: skip
    for rep in range(args.repeats):
        for name, path in variants.items():
            env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()))
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, __file__, "--child", *passthrough], env=env,
                                 capture_output=True, text=True)  # fmt: skip
            if res.returncode:
                sys.exit(f"variant {name} ({path}) failed:\n{res.stderr[-3000:]}")
            doc["variants"][name].append(json.loads(res.stdout))
            print(f"repeat {rep} {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    md = table(doc)
    print(md)
    for name, runs in doc["variants"].items():
        for sc in runs[-1]:
            if sc["profile"]:
                print(f"\n## {name}: {sc['rows']} rows, {sc['waiting']} waiting, churn {sc['churn']}\n")
                print("\n".join(sc["profile"].splitlines()[: args.top + 12]))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
