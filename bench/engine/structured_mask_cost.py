"""Per-step cost of structured-output masks in the CPU sampler (not a test; run by hand):

    PYTHONPATH=workers nice -n 10 .venv/bin/python bench/engine/structured_mask_cost.py [--batch 32] [--steps 60]

SmolLM2-135M-Instruct's tokenizer (vocab 49152), random fp32 logits [batch, 49152]; each step samples every row
(temperature 1) and feeds the token to its matcher, as the engine does. Reports the median sample_rows time of a
step with no grammar, with every row under a JSON schema, with a quarter of the rows under it, and the parts
(constrained_rows: bitmask fill + apply + copying the rows; the matchers' accept_token). The machine is shared, so
each configuration runs interleaved with the others, step by step, on the same logits."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.sampler import make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.structured import GrammarState, StructuredOutput, constrained_rows

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "city", "tags"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from inlaid_worker.model.smollm2 import ensure_smollm2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ensure_smollm2()))
    cache = GrammarCache(tok, {int(tok.eos_token_id)})
    t0 = time.perf_counter()
    compiled = cache.compile(StructuredOutput("json_schema", json.dumps(SCHEMA)))
    compile_ms = (time.perf_counter() - t0) * 1e3
    vocab = len(tok)
    b = args.batch
    params = [SamplingParams(temperature=1.0, seed=i) for i in range(b)]
    gen = torch.Generator().manual_seed(0)

    configs = [0, b // 4, b]
    states = {n: [GrammarState(compiled) if i < n else None for i in range(b)] for n in configs}
    gens = {n: [make_generator(i) for i in range(b)] for n in configs}
    times: dict[int, list[float]] = {n: [] for n in configs}
    masks: dict[int, list[float]] = {n: [] for n in configs}
    accepts: dict[int, list[float]] = {n: [] for n in configs}
    for _ in range(args.steps):
        logits = torch.randn(b, vocab, generator=gen)
        for n in configs:
            st = states[n]
            for i, s in enumerate(st):  # a matcher that ended starts over (keeps every row constrained)
                if s is not None and s.terminated:
                    st[i] = GrammarState(compiled)
            t = time.perf_counter()
            out = sample_rows(logits, params, gens[n], None, st if n else None)
            times[n].append(time.perf_counter() - t)
            if n:
                t = time.perf_counter()
                constrained_rows(logits, st)  # the same work sample_rows did for the mask, timed alone
                masks[n].append(time.perf_counter() - t)
            t = time.perf_counter()
            for i, s in enumerate(st):
                if s is not None:
                    assert s.accept(out.tokens[i])
            accepts[n].append(time.perf_counter() - t)
    med = statistics.median
    print(f"batch {b}, vocab {vocab}, {args.steps} steps, 1 torch thread; schema compile {compile_ms:.1f} ms")
    base = med(times[0]) * 1e3
    print(f"no grammar:              sample_rows {base:.2f} ms/step")
    for n in configs[1:]:
        total = med(times[n]) * 1e3
        print(
            f"{n:>2}/{b} rows with grammar: sample_rows {total:.2f} ms/step ({total - base:+.2f} ms); "
            f"constrained_rows {med(masks[n]) * 1e3:.2f} ms, accept_token {med(accepts[n]) * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
