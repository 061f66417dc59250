#!/usr/bin/env bash
# Session 11 (async scheduling under load), one device call: (1) the async GPU engine test (steps launched ahead with
# admissions: mixed steps with a token feed through the prefill graphs), (2) s11_async_load.py: sync vs decode-only
# async vs async with admissions ahead (and its eager-mixed-step variant), alternating, on one 7B int4 runner.
# Usage (device): OUT=... bash bench/engine/s11_async_load.sh [BENCH_ARGS...]
set -o pipefail
OUT=${OUT:-/tmp/s11-async-load-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/../kernels/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  t0=$(date +%s)
  [ "${SKIP_TESTS:-0}" = 1 ] || timeout "${TESTS_S:-40}" python3 -m pytest -q -p no:cacheprovider -rs \
    workers/tests/engine/test_async_scheduling_gpu.py >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 15 "$OUT/gpu-tests.log"
  t1=$(date +%s)
  timeout "${BENCH_S:-95}" python3 bench/engine/s11_async_load.py --out "$OUT" "$@"
  echo "== bench rc $? in $(( $(date +%s) - t1 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s11-async-load-log.txt"
