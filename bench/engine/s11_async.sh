#!/usr/bin/env bash
# Session 11 (issue 4, async scheduling), one device call: (1) the GPU tests of the engine's device path (s9_env.sh's
# GPU_ENGINE_TESTS, the async GPU test, the decode graphs' tests: the token feed writes into their static buffer),
# (2) s11_async.py: the engine decode loop sync vs async, alternating rounds on one 7B int4 runner.
# Usage (device): OUT=... bash bench/engine/s11_async.sh [BENCH_ARGS...]
set -o pipefail
OUT=${OUT:-/tmp/s11-async-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/../kernels/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$(dirname "${BASH_SOURCE[0]}")/../kernels/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=("${GPU_ENGINE_TESTS[@]}" workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_async_scheduling.py
  workers/tests/model/test_decode_graphs.py workers/tests/model/test_graph_staging_gpu.py)
{
  device_header
  t0=$(date +%s)
  [ "${SKIP_TESTS:-0}" = 1 ] || timeout "${TESTS_S:-90}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 8 "$OUT/gpu-tests.log"
  t1=$(date +%s)
  timeout "${BENCH_S:-170}" python3 bench/engine/s11_async.py --out "$OUT" "$@"
  echo "== bench rc $? in $(( $(date +%s) - t1 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s11-async-log.txt"
