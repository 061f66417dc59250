#!/usr/bin/env bash
# Session 22 (helper B), one device call: quant_tct's GPU tests beside s22_tct.py's checks (8 processes, which also
# compile every kernel), then s22_tct.py's timing alone and its report (kernels-2026-12-02-s22-tct.{md,json}).
# Usage (device): OUT=... bash bench/kernels/s22_tct.sh [CHECK_S] [BENCH_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels
WORK=/tmp/s22-tct; rm -rf "$WORK"; mkdir -p "$WORK" "$OUT"
CHECK_S=${1:-150} BENCH_S=${2:-150}
STEM=${S22_STEM:-kernels-2026-12-02-s22-tct}
{
  device_header
  t0=$(date +%s)
  T=workers/tests/kernels/test_quant_tct.py
  # S22_TESTS_A / _B: node ids of the GPU tests (default: all of them, two processes)
  timeout "$CHECK_S" python3 -m pytest ${S22_TESTS_A:-$T -k matches} -v -p no:cacheprovider >"$WORK/tests-a.log" 2>&1 &
  timeout "$CHECK_S" python3 -m pytest ${S22_TESTS_B:-$T -k "counts or bf16"} -v -p no:cacheprovider >"$WORK/tests-b.log" 2>&1 &
  check_shards s22_tct "$CHECK_S" ${S22_SHARDS:-10}
  wait
  cat "$WORK"/tests-a.log "$WORK"/tests-b.log > "$OUT/$STEM-tests.log"
  echo "phase 1 (tests + checks) $(( $(date +%s) - t0 )) s"; tail -q -n 2 "$WORK"/tests-*.log
  grep -E "PASSED|FAILED|ERROR" "$OUT/$STEM-tests.log" | sed 's/.*:://' | cut -c1-160
  grep -m4 -E "^E  " "$OUT/$STEM-tests.log" | cut -c1-300
  echo "checked: $(cat "$WORK"/check-*.jsonl | wc -l)"; cat "$WORK"/check-*.jsonl | cut -c1-200
  tail -n 3 "$WORK"/check-*.log | grep -iE "error|Traceback" | head -5
  t1=$(date +%s)
  timeout "$BENCH_S" python3 bench/kernels/s22_tct.py bench --out "$WORK"
  echo "bench rc $? $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/s22_tct.py report --out "$WORK" --dest "$OUT" --stem "$STEM" \
    --command "OUT=\$OUT bash bench/kernels/s22_tct.sh $*"
  echo "total $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
