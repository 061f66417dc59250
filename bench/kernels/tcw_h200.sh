#!/usr/bin/env bash
# One device call for the warp-specialized large-M int4 kernel (quant_tcw, issue 4, M = 256 / 512): its GPU tests
# first (correctness, hang-guarded), then the timing alone (tcw sweep vs today's tcl candidates, dequant, bf16), then
# the report (JSON + markdown) to $OUT. Usage on the device: bash bench/kernels/tcw_h200.sh  (OUT set there)
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, device_header, work_dirs
work_dirs /tmp/tcw-out /tmp/tcw-work
{
  device_header
  t0=$(date +%s)
  timeout "${TEST_S:-120}" python3 -m pytest workers/tests/kernels/test_quant_tcw.py -q -p no:cacheprovider -x \
    >"$WORK/tests.log" 2>&1
  rc=$?
  echo "tests rc=$rc $(( $(date +%s) - t0 )) s"; tail -n 25 "$WORK/tests.log"
  if [ "$rc" = 0 ] || [ "${FORCE:-0}" = 1 ]; then
    timing_phase tcw_h200 "${BENCH_S:-300}" ${SHAPES:+--shapes "$SHAPES"}
    report_phase tcw_h200
  fi
  cp "$WORK/tests.log" "$OUT/" 2>/dev/null
  date -u
} 2>&1 | tee "$OUT/log.txt"
