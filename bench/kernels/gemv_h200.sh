#!/usr/bin/env bash
# One device call for the small-M int4 GEMV work (issue 4): kernel tests on the GPU and the guard sweep run
# in parallel first (correctness only; they also fill Triton's cache), then the timing runs alone, then the
# report (JSON + markdown) goes to $OUT. Every phase has its own timeout, so the call ends inside its budget
# (defaults: 170 + 150 s) and still reports what finished. Usage on the device: bash bench/kernels/gemv_h200.sh
set -o pipefail
OUT=${OUT:-/tmp/gemv-out}
WORK=/tmp/gemv-work
STEM=${STEM:-kernels-$(date -u +%F)-v6}
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, SHARDS (default 8), device_header
{
  device_header
  t0=$(date +%s)
  # the tensor-core cases (qmm-b4-tc*) belong to bench/kernels/tc_h200.sh
  timeout "${TEST_S:-160}" python3 -m pytest workers/tests/kernels/test_quant_matmul.py \
    workers/tests/kernels/test_quant_hgemv_ahead.py workers/tests/kernels/test_quant_hgemv_burst.py -q -n 4 -p no:cacheprovider -k "not qmm-b4-tc" \
    >"$OUT/tests.log" 2>&1 &
  guard_shards gemv_h200 "${GUARD_S:-170}"
  phase1_done "tests + guard" 5
  timing_phase gemv_h200 "${BENCH_S:-150}"
  report_phase gemv_h200 --stem "$STEM"
  date -u
} 2>&1 | tee "$OUT/log.txt"
