#!/usr/bin/env bash
# Session 12, one device call: (1) the quant_tcs GPU tests (stop here unless they pass) beside s12_tcs.py's checks
# (16 processes, which also fill Triton's cache), (2) s12_tcs.py's timing alone (tcs candidates vs the shipped picks,
# iso / pdl, the 32-layer up/down chain), (3) its report. Everything comes back in $OUT/s12-tcs.tgz (+ the reports).
# Usage (device): OUT=... [S12_LAYER=1 S12_STEM=...] bash bench/kernels/s12_tcs.sh [BENCH_S] [CHECK_S]
# (S12_LAYER=1: the decode step's shapes at M = 4..16 and the layer chain, see s12_tcs.py)
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s12-out /tmp/s12-tcs
BENCH_S=${1:-150}
CHECK_S=${2:-120}
{
  device_header
  t0=$(date +%s)
  timeout 90 python3 -m pytest workers/tests/kernels/test_quant_tcs.py -q -p no:cacheprovider -x >"$OUT/tests.log" 2>&1
  echo "tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 30 "$OUT/tests.log"
  if ! grep -qE "^[0-9]+ passed" "$OUT/tests.log" || grep -qE "[0-9]+ (failed|errors?)\b" "$OUT/tests.log"; then
    echo "== GPU tests did not pass: no timing"; BENCH_S=0
  fi
  if (( BENCH_S > 0 )); then
    check_shards s12_tcs "$CHECK_S" 15
    phase1_done "checks" 0
    echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
    grep -h '"error"' "$WORK"/check-*.jsonl | head -5
    timing_phase s12_tcs "$BENCH_S"
    report_phase s12_tcs --stem "${S12_STEM:-kernels-2026-11-30-s12-tcs}" \
      --command "S12_LAYER=${S12_LAYER:-0} bash bench/kernels/s12_tcs.sh $*"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$WORK/log.txt"
archive_work s12-tcs
