#!/usr/bin/env bash
# Session 11's closing device call (one call, ~200 s): the GPU tests of what this session changed (the row attention
# and its fused rotary, tcv, async scheduling, the decode graphs and fusions, the engine's device path), then the
# engine decode loop sync vs async on the 7B int4 random model with the session's defaults (bench/engine/s11_async.py).
# Usage (device, repo root): OUT=... bash bench/kernels/s11_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s11-final-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=(workers/tests/kernels/test_decode_row.py workers/tests/kernels/test_decode_row_rope.py
  workers/tests/kernels/test_quant_tcv.py workers/tests/kernels/test_decode_kernels.py workers/tests/kernels/test_pdl.py
  workers/tests/model/test_decode_graphs.py workers/tests/model/test_decode_fusion.py
  workers/tests/model/test_graph_staging_gpu.py "${GPU_ENGINE_TESTS[@]}"
  workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_async_scheduling.py
  workers/tests/engine/test_async_admit.py)
{
  device_header
  t0=$(date +%s)
  timeout "${TESTS_S:-110}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 25 "$OUT/gpu-tests.log"
  t1=$(date +%s)
  timeout "${BENCH_S:-60}" python3 bench/engine/s11_async.py --out "$OUT" --batches 1,4 --rounds 2 --steps 100
  echo "== bench rc $? in $(( $(date +%s) - t1 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s11-final-log.txt"
