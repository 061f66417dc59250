#!/usr/bin/env bash
# One device call for the large-M int4 kernel (quant_tcl, issue 4, M = 64..512): its GPU tests and the guard sweep
# run in parallel first (correctness; they also fill Triton's cache), then the timing runs alone, then the report
# (JSON + markdown) goes to $OUT. Usage on the device: bash bench/kernels/tcl_h200.sh  (OUT set there)
set -o pipefail
OUT=${OUT:-/tmp/tcl-out}
WORK=/tmp/tcl-work
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, SHARDS (default 8), device_header
{
  device_header
  t0=$(date +%s)
  timeout "${TEST_S:-60}" python3 -m pytest workers/tests/kernels/test_quant_tcl.py -q -p no:cacheprovider \
    >"$OUT/tests.log" 2>&1 &
  guard_shards tcl_h200 "${GUARD_S:-60}"
  phase1_done "tests + guard" 12
  timing_phase tcl_h200 "${BENCH_S:-90}" ${SHAPES:+--shapes "$SHAPES"}
  report_phase tcl_h200
  date -u
} 2>&1 | tee "$OUT/log.txt"
