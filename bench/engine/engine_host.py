"""The engine's own host work in a pure decode step (issue 4: the CPU must not set the pace), on the CPU.

An LLMEngine runs B requests (B = 1, 4, 16 by default) in decode with a scripted stub runner: each step it returns
[S, vocab] logits whose row for a sequence peaks at the next token of a fixed text (English with multi-byte UTF-8:
accents, CJK, emoji split over byte tokens), so greedy decoding replays that text and the detokenizer sees real
pieces. The runner's and the sampler's times are measured but are not the point (on the H200 they are the graph
replay and device_sampler; here a stub and sample_rows). Per phase, median us of --steps steps:
schedule (Scheduler.schedule), adapters, build (build_step_input), runner, sample (sample_rows), detok
(IncrementalDetokenizer.add / flush), post (the rest of _postprocess: _append_token, _output, the sampler's
arguments), commit, other (the rest of step()), step (the whole engine.step()), host = step - runner - sample.

Tokenizer: the tests' byte-level BPE (factories.make_tokenizer, 512 ids), a transformers fast tokenizer, so the
detokenizer takes its Rust fast path as it does with a served Llama tokenizer.

  nice -n 10 .venv/bin/python bench/engine/engine_host.py --label before --save bench/results/engine-host-2026-11-30-s10

Each run merges its label into <save>.json and rewrites <save>.md with every label in the JSON.

A/B (--ab TREE): the code before (a workers/ directory holding another inlaid_worker, e.g. made with
`git archive a43e3e1 workers/inlaid_worker | tar -x -C /tmp/old` -> --ab /tmp/old/workers) and today's code take
turns in fresh subprocesses (PYTHONPATH puts TREE first for "before"), --rounds times per batch size; each phase is
the median of the rounds' medians. On a shared host this keeps load changes out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "workers" / "tests"))

from factories import make_tokenizer  # noqa: E402
from phase_clock import phase_timer, wrap_engine_phases  # noqa: E402

PHASES = ("schedule", "adapters", "build", "runner", "sample", "detok", "post", "commit", "other")
TEXT = (
    "The capital of France is Paris. Café, naïve, 日本語 and emoji 🙂 appear in text; "
    "def add(a, b):\n    return a + b\n Numbers: 0 1 2 3 100 1000. Hello, world! How are you today? "
)
clock = time.perf_counter


class ScriptRunner:
    """BENCHMARK-ONLY stub runner: row i's logits peak (by 10) at the token after position context_len - 1 of a
    cyclic script, so greedy sampling replays the script."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script = script
        self.vocab = vocab
        self.max_adapters = 0

    def execute(self, step: Any) -> torch.Tensor:
        ctx = step.context_lens.tolist()
        logits = torch.zeros(len(ctx), self.vocab)
        n = len(self.script)
        logits[range(len(ctx)), [self.script[c % n] for c in ctx]] = 10.0
        return logits

    def add_adapter(self, name: str, adapter: Any) -> int:
        raise NotImplementedError

    def remove_adapter(self, name: str) -> None:
        raise NotImplementedError

    def prepare_adapters(self, names: Iterable[str], keep: Iterable[str]) -> dict[str, int]:
        raise NotImplementedError


def med_us(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1e6, 2)


def run_batch(batch: int, steps: int, prompt_len: int, stop: tuple[str, ...]) -> dict[str, float]:
    import inlaid_worker.engine.engine as eng
    from inlaid_worker.engine.detokenizer import IncrementalDetokenizer
    from inlaid_worker.engine.engine import EngineLimits, LLMEngine
    from inlaid_worker.engine.sampling_params import SamplingParams
    from inlaid_worker.engine.tokenizer import PromptTokenizer

    hf = make_tokenizer(512)
    script = hf(TEXT, add_special_tokens=False)["input_ids"]
    runner = ScriptRunner(script, hf.vocab_size)
    limits = EngineLimits(16, batch * 160 + 64, batch, 4096, 2048, 0, True)
    engine = LLMEngine(runner, PromptTokenizer(hf), limits, base_model_id="base", eos_token_ids=set())
    acc = dict.fromkeys(PHASES, 0.0)

    wrap = phase_timer(acc, clock)

    wrap_engine_phases(engine, wrap)
    runner.execute = wrap("runner", runner.execute)  # type: ignore[method-assign]
    originals = (eng.build_step_input, eng.sample_rows, IncrementalDetokenizer.add, IncrementalDetokenizer.flush)
    eng.build_step_input = wrap("build", eng.build_step_input)  # type: ignore[attr-defined]
    eng.sample_rows = wrap("sample", eng.sample_rows)  # type: ignore[attr-defined]
    IncrementalDetokenizer.add = wrap("detok", IncrementalDetokenizer.add)  # type: ignore[method-assign]
    IncrementalDetokenizer.flush = wrap("detok", IncrementalDetokenizer.flush)  # type: ignore[method-assign]
    try:
        for r in range(batch):  # each request starts at another place of the script
            prompt = [script[(r * 7 + i) % len(script)] for i in range(prompt_len)]
            params = SamplingParams(max_tokens=steps + 64, temperature=0.0, ignore_eos=True, stop=stop)
            engine.add_request(f"r{r}", prompt, params, "")
        while any(s.num_computed_tokens < prompt_len for s in engine.scheduler.running) or engine.num_waiting:
            engine.step()
        for _ in range(20):
            engine.step()
        per: dict[str, list[float]] = {k: [] for k in (*PHASES, "step", "host")}
        for _ in range(steps):
            for k in acc:
                acc[k] = 0.0
            t0 = clock()
            outs = engine.step()
            total = clock() - t0
            if len(outs) != batch or any(len(o.token_ids) != 1 for o in outs):
                raise RuntimeError(f"expected one token for each of {batch} rows, got {outs}")
            acc["post"] -= acc["sample"] + acc["detok"]
            acc["other"] = total - sum(acc[k] for k in PHASES if k != "other")
            for k in PHASES:
                per[k].append(acc[k])
            per["step"].append(total)
            per["host"].append(total - acc["runner"] - acc["sample"])
    finally:
        eng.build_step_input, eng.sample_rows, IncrementalDetokenizer.add, IncrementalDetokenizer.flush = originals  # type: ignore[attr-defined,misc]
    return {k: med_us(v) for k, v in per.items()}


def comparison(name: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """before -> after (change) per phase and batch, for an A/B pair."""
    batches = list(before["batches"])
    lines = [f"## {name}: before -> after", "", f"`{after['command']}` ({after['date']})", ""]
    lines += ["| phase (median us) | " + " | ".join(f"batch {b}" for b in batches) + " |"]
    lines += ["|---" * (len(batches) + 1) + "|"]
    for k in (*PHASES, "step", "host"):
        cells = []
        for b in batches:
            x, y = before["batches"][b][k], after["batches"][b][k]
            cells.append(f"{x:.1f} -> {y:.1f} ({(y - x) / x * 100:+.0f}%)" if x else f"{x:.1f} -> {y:.1f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(data: dict[str, Any]) -> str:
    lines = ["# Engine host work in a decode step, on the CPU (generated by bench/engine/engine_host.py)", ""]
    lines += [
        "An LLMEngine in pure decode at batch 1 / 4 / 16 with a scripted stub runner (greedy replay of a text with",
        "multi-byte UTF-8; byte-level BPE tokenizer, 512 ids; 200-token prompts, 1,000 timed steps after 20, so the",
        "contexts run ~220 -> ~1,240 tokens). Phases as in the module docstring; host = step - runner - sample.",
        "A/B sections: the code before (a43e3e1, from `git archive`) and today's take turns in fresh subprocesses,",
        "5 rounds; each figure is the median of the rounds' medians. The other sections are single runs made one",
        "after another while the changes went in (the host was shared: compare them only roughly).",
        "",
    ]
    for label in data:
        if label.endswith(": before") and label[: -len("before")] + "after" in data:
            name = label[: -len(": before")]
            lines += comparison(name, data[label], data[name + ": after"])
    for label, res in data.items():
        lines += [f"## {label}", "", f"`{res['command']}` ({res['date']}, torch {res['torch']})", ""]
        batches = list(res["batches"])
        lines += ["| phase (median us) | " + " | ".join(f"batch {b}" for b in batches) + " |"]
        lines += ["|---" * (len(batches) + 1) + "|"]
        for k in (*PHASES, "step", "host"):
            lines.append(f"| {k} | " + " | ".join(f"{res['batches'][b][k]:.1f}" for b in batches) + " |")
        lines.append("")
    return "\n".join(lines)


def ab(tree: Path, batches: list[int], rounds: int, steps: int, prompt: int, stop: str) -> dict[str, Any]:
    """{"before": {batch: phases}, "after": {...}}: alternating subprocess runs, median of the rounds' medians."""
    import os
    import subprocess

    runs: dict[str, dict[str, list[dict[str, float]]]] = {"before": {}, "after": {}}
    for b in batches:
        for r in range(rounds):
            for variant in ("before", "after") if r % 2 == 0 else ("after", "before"):
                env = dict(os.environ)
                if variant == "before":
                    env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
                cmd = [sys.executable, __file__, "--one", str(b), "--steps", str(steps), "--prompt", str(prompt)]
                cmd += ["--stop", stop, "--label", variant, "--save", "-"]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                runs[variant].setdefault(str(b), []).append(json.loads(out.strip().splitlines()[-1]))
    return {
        v: {b: {k: round(statistics.median(x[k] for x in rs), 2) for k in rs[0]} for b, rs in d.items()}
        for v, d in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--save", type=Path, required=True, help="path without suffix: <save>.json and <save>.md")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--stop", default="", help="comma-separated stop strings for every request (never in the text)")
    ap.add_argument("--ab", type=Path, default=None, help="A/B against the inlaid_worker under this directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # a subprocess of --ab: one batch, JSON out
    args = ap.parse_args()
    torch.set_num_threads(1)
    stop = tuple(s for s in args.stop.split(",") if s)
    if args.one:
        import inlaid_worker

        print(f"# {inlaid_worker.__file__}", file=sys.stderr)
        print(json.dumps(run_batch(args.one, args.steps, args.prompt, stop)))
        return
    command = "nice -n 10 .venv/bin/python bench/engine/engine_host.py " + " ".join(sys.argv[1:])
    date = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if args.ab is not None:
        batches = [int(x) for x in args.batches.split(",")]
        both = ab(args.ab, batches, args.rounds, args.steps, args.prompt, args.stop)
        results = {
            f"{args.label}: {v}": {"command": command, "date": date, "torch": torch.__version__, "batches": d}
            for v, d in both.items()
        }
        save(args.save, results)
        for label, res in results.items():
            print(markdown({label: res}))
        return
    res: dict[str, Any] = {"command": command, "date": date, "torch": torch.__version__, "batches": {}}
    for b in (int(x) for x in args.batches.split(",")):
        res["batches"][str(b)] = run_batch(b, args.steps, args.prompt, stop)
        print(b, res["batches"][str(b)], flush=True)
    save(args.save, {args.label: res})
    print(markdown({args.label: res}))


def save(base: Path, results: dict[str, Any]) -> None:
    """Merges results (label -> run) into <base>.json and rewrites <base>.md from the whole JSON."""
    path = base.with_suffix(".json")
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(results)
    path.write_text(json.dumps(data, indent=1))
    base.with_suffix(".md").write_text(markdown(data))


if __name__ == "__main__":
    main()
