"""Session 16b (issue 4): the decode step with two (tuner table, quant_tcs x staging) variants, alternating round by
round on ONE runner: s16_mid_decode.py's protocol, where each variant also sets quant_tcs.X_CHUNK before its graph is
captured and before its rounds (the staging depth is a launch-time constexpr: each capture bakes its own kernels).

--tables old=PATH@x16,new=PATH@CHUNK.json: "x16" = session 16's staging (quant_tcs.X_CHUNK_16), else a JSON file
{block_m: XCH} (s16_big.py report's -xchunk.json) over it.
Usage (device): PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_big_decode.py --out DIR \
    --tables old=/tmp/old.json@x16,new=$TABLE@/tmp/xchunk.json --shape 7b --batches 32,64
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import s16_mid_decode as base
from inlaid_worker.kernels import quant_tcs

CHUNKS: dict[int, dict] = {}  # id(table) -> X_CHUNK
_use_table = base.use_table


def chunk_of(spec: str) -> dict:
    chunk = dict(quant_tcs.X_CHUNK_16)
    if spec != "x16":
        chunk.update({int(k): int(v) for k, v in json.loads(Path(spec).read_text()).items()})
    return chunk


def use_variant(table: dict, cache: dict) -> None:
    _use_table(table, cache)
    quant_tcs.X_CHUNK.clear()
    quant_tcs.X_CHUNK.update(CHUNKS[id(table)])


def tables(spec: str) -> dict[str, dict]:
    out = {}
    for part in filter(None, spec.split(",")):
        name, rest = part.split("=", 1)
        path, chunk = rest.split("@", 1)
        out[name] = base.qmm_tuned.parse_table(json.loads(Path(path).read_text()))
        CHUNKS[id(out[name])] = chunk_of(chunk)
        print(name, path, "X_CHUNK", CHUNKS[id(out[name])], flush=True)
    return out


base.use_table = use_variant
base.tables = tables

if __name__ == "__main__":
    sys.argv += [] if "--tag" in sys.argv else ["--tag", "decode-2026-12-01-s16-big"]
    base.main()
