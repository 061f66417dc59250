"""Session 17, helper H7 (issue 4): s16_mid_decode.py (two tuner tables alternating round by round on ONE runner, device
time) at a batch of 256 with a shorter cached context. s16_mid_decode's 512 tokens a sequence at batch 256 would hold
64 GiB of 7B KV cache (100 GiB at 13B) and its point() clones the cache once more (the same-KV logits check), past the
H200's 139 GiB; S17_CONTEXT tokens a sequence (default 256: 32 + 32 GiB at 7B, 50 + 50 GiB at 13B) keep both in memory.
Everything else is s16_mid_decode's (its arguments, rounds, JSON); the JSON gains "context".
Usage (device): S17_CONTEXT=256 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s17_m256_decode.py --out DIR \
    --tables old=OLD.json,new=NEW.json --shape 7b --batches 256 --tag decode-...-s17-tcsx-m256
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import s16_mid_decode

CONTEXT = int(os.environ.get("S17_CONTEXT", "256"))


def main() -> None:
    s16_mid_decode.CONTEXT = CONTEXT  # point() and main() read the module global at call time
    s16_mid_decode.main()
    argv = sys.argv[1:]
    out, tag, shape = (argv[argv.index(f) + 1] if f in argv else d for f, d in
                       (("--out", None), ("--tag", "s16-mid"), ("--shape", "7b")))  # fmt: skip
    path = Path(out) / f"{tag}-{shape}.json"
    doc = json.loads(path.read_text())
    doc["context"] = CONTEXT
    path.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
