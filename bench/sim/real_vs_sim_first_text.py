"""How many tokens each request of a trace generates before its first non-empty text, on the real-vs-sim fixture.

The load client times a request's first token when the first streamed chunk with text arrives, and the gateway
streams no chunk for a token whose text is empty (a special token, or bytes of an unfinished UTF-8 character
that the detokenizer holds back). The simulator's TTFT is the end of the step that samples the first token.
On the tiny random model of bench/sim/calibrate_cpu.py, greedy outputs often start with such tokens, so the
client's TTFT includes extra decode steps. This replays every request of the trace greedily (as the load client
asks: temperature 0, ignore_eos, the synthetic "hello" prompt) in the worker's own engine, batched like the
worker, and records k = the 1-based index of the token that first yields text (the output length + 1 when no
text is ever streamed: the request fails with "no tokens streamed"). Prompts over the context limit are skipped.

    .venv/bin/python bench/sim/real_vs_sim_first_text.py FIXTURE TRACE.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workers"))

from inlaid_worker.engine.factory import EngineOptions, adapter_dirs, create_engine, read_adapter  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402


def main(fixture: str, trace: str, out: str) -> None:
    root = Path(fixture)
    opts = EngineOptions(kv_cache_bytes=32 << 20, block_size=16, max_num_seqs=64, max_num_batched_tokens=2048,
                         enable_prefix_caching=False)  # as the real worker of real_vs_sim.sh
    engine = create_engine(root / "model", opts)
    for name, path in adapter_dirs(str(root / "adapters")).items():
        a = read_adapter(path, engine.runner.config, root / "model")
        engine.add_adapter(name, a, a.rank, tuple(sorted(a.targets)))
    recs = [json.loads(line) for line in open(trace)]
    first: dict[str, int] = {}
    want: dict[str, int] = {}
    for i, r in enumerate(recs):
        ids = engine.tokenizer.encode_prompt("hello" + " hello" * (r["prompt_tokens"] - 1))
        if len(ids) >= engine.limits.max_model_len:
            continue
        n = engine.max_new_tokens(len(ids), r["output_tokens"])
        rid = f"r{i}"
        want[rid] = n
        engine.add_request(rid, ids, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True), r["task"])
    while engine.has_work:
        for o in engine.step():
            if o.request_id in first:
                continue
            if o.text != "":
                first[o.request_id] = o.completion_tokens
                if o.finish_reason is None:
                    engine.abort_request(o.request_id)
            elif o.finish_reason is not None:
                first[o.request_id] = want[o.request_id] + 1
    with open(out, "w") as g:
        for i, r in enumerate(recs):
            rid = f"r{i}"
            k = first.get(rid)
            g.write(
                json.dumps({"i": i, "task": r["task"], "output_tokens": want.get(rid), "first_text_token": k}) + "\n"
            )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
