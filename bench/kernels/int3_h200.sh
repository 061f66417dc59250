#!/usr/bin/env bash
# One device call for the 3-bit half2 GEMV (quant_hgemv3, issue 4): its GPU tests and the guard run in parallel
# first (correctness; they also fill Triton's cache), then the timing alone, then the report (JSON + markdown) to
# $OUT. Each phase has its own timeout. Usage on the device: bash bench/kernels/int3_h200.sh
set -o pipefail
OUT=${OUT:-/tmp/int3-out}
WORK=/tmp/int3-work
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, SHARDS (default 8), device_header
{
  device_header
  t0=$(date +%s)
  timeout "${TEST_S:-80}" python3 -m pytest workers/tests/kernels/test_quant_hgemv3.py -q -p no:cacheprovider \
    >"$OUT/tests.log" 2>&1 &
  guard_shards int3_h200 "${GUARD_S:-85}"
  phase1_done "tests + guard" 5
  timing_phase int3_h200 "${BENCH_S:-90}"
  report_phase int3_h200
  date -u
} 2>&1 | tee "$OUT/log.txt"
