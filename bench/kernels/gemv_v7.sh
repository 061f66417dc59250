#!/usr/bin/env bash
# One device call for v7 (bench/kernels/NOTES.md): the hgemvr GPU tests and the error checks (one process per shape;
# they also fill Triton's cache) in parallel, then the timing alone, then the report to $OUT. Each phase has a timeout.
set -o pipefail
OUT=${OUT:-/tmp/gemv-out}
WORK=/tmp/gemv-v7
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
{
  device_header
  t0=$(date +%s)
  timeout "${TEST_S:-75}" python3 -m pytest workers/tests/kernels/test_quant_hgemv_rows.py -q -p no:cacheprovider \
    >"$OUT/tests.log" 2>&1 &
  for i in 0 1; do for m in 1 2 4; do
    timeout "${CHECK_S:-75}" python3 bench/kernels/gemv_v7.py check --out "$WORK" --shape "$i" --ms "$m" &
  done; done
  phase1_done "tests + checks" 3
  timing_phase gemv_v7 "${BENCH_S:-70}"
  report_phase gemv_v7
  date -u
} 2>&1 | tee "$OUT/log.txt"
