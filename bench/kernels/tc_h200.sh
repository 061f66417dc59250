#!/usr/bin/env bash
# One device call for the int4 tensor-core kernel (quant_tcg, issue 4, M = 8..256): the GPU kernel tests of the
# tensor-core cases and the guard sweep run in parallel first (correctness; they also fill Triton's cache), then
# the timing runs alone, then the report (JSON + markdown) goes to $OUT.
# Usage on the device: bash bench/kernels/tc_h200.sh  (OUT set there; SHAPES= limits the bench to some shapes)
set -o pipefail
OUT=${OUT:-/tmp/tc-out}
WORK=/tmp/tc-work
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, SHARDS (default 8), device_header
{
  device_header
  t0=$(date +%s)
  timeout "${TEST_S:-90}" python3 -m pytest workers/tests/kernels/test_quant_matmul.py -q -p no:cacheprovider \
    -k "b4-tc or tuner" >"$OUT/tests.log" 2>&1 &
  [ -n "$SKIP_GUARD" ] || guard_shards tc_h200 "${GUARD_S:-100}"
  phase1_done "tests + guard" 5
  timing_phase tc_h200 "${BENCH_S:-140}" ${SHAPES:+--shapes "$SHAPES"}
  report_phase tc_h200
  date -u
} 2>&1 | tee "$OUT/log.txt"
