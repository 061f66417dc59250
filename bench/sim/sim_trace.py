"""The simulator's copy of a trace: prompt lengths as the worker tokenizes the load client's synthetic prompts
("hello" repeated), so simulated and served prefill lengths match.

    .venv/bin/python bench/sim/sim_trace.py MODEL_DIR TRACE.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers"))

from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402


def main(model_dir: str, trace: str, out: str) -> None:
    tok = PromptTokenizer.from_model_dir(model_dir)
    with open(trace) as f, open(out, "w") as g:
        for line in f:
            r = json.loads(line)
            r["prompt_tokens"] = len(tok.encode_prompt("hello" + " hello" * (r["prompt_tokens"] - 1)))
            g.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
