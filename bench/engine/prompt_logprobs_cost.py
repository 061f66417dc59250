"""Cost of prompt logprobs on the CPU engine (SmolLM2-135M, fp32): one request of a P-token prompt and 1 output
token, with and without sampling.prompt_logprobs (top 5); best of R runs each, prefix cache off. Prints JSON.

    .venv/bin/python bench/engine/prompt_logprobs_cost.py [P] [R]
"""

from __future__ import annotations

import json
import sys
import time

import torch
from inlaid_worker.engine.factory import EngineOptions, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.model.smollm2 import ensure_smollm2


def main() -> None:
    p = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    eng = create_engine(ensure_smollm2(), EngineOptions(enable_prefix_caching=False, max_num_batched_tokens=2048))
    prompt = [(i * 7919) % 40000 + 100 for i in range(p)]
    out: dict[str, float] = {}
    for name, k in (("plain", None), ("prompt_logprobs_5", 5)) * 2:
        best = float("inf")
        for r in range(reps):
            eng.add_request(f"{name}-{r}", prompt, SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=k))
            t0 = time.perf_counter()
            while eng.has_work:
                eng.step()
            best = min(best, time.perf_counter() - t0)
        out[name] = round(best * 1e3, 1)
    print(json.dumps({"prompt_tokens": p, "runs": reps, "best_ms": out, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
