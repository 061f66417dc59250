#!/usr/bin/env bash
# Session 12 follow-up, kind "tcs2" (quant_tcs PIPE: half-tile wgmmas overlapping the next half's dequantization, no
# thread barrier of ours in the K loop), in one short device call: (1) the tcs2 GPU tests of test_quant_tcs.py (two
# processes) beside s12_tcs.py's checks of the timed candidates (which also compile them), (2) if the tests passed,
# s12_tcs.py's timing alone (tcs2 vs the shipped pick, iso / pdl; no chains), (3) its report into $OUT.
# Usage (device): OUT=... bash bench/kernels/s12_tcs2.sh [TESTS_S] [BENCH_S]   (defaults: the decode step's gate/up and
# down at M = 4 / 8 / 16, plan 128 columns x 4 stages, splits 3 / 4 / 8; override with S12_PLANS / S12_SPLITS /
# S12_SHAPES, see s12_tcs.py)
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s12-out /tmp/s12-tcs2
export S12_LAYER=1 S12_CHAINS=0 S12_KIND=tcs2 S12_PLANS=${S12_PLANS:-128:4:tcs2} S12_SPLITS=${S12_SPLITS:-3,4,8}
export S12_SHAPES=${S12_SHAPES:-"7B gate/up 4096x22016,7B down 11008x4096"}
TESTS_S=${1:-35}
BENCH_S=${2:-40}
T="workers/tests/kernels/test_quant_tcs.py"
{
  device_header
  t0=$(date +%s)
  timeout "$TESTS_S" python3 -m pytest "$T" -q -p no:cacheprovider -k "tcs2 and matches" >"$OUT/tests-a.log" 2>&1 &
  timeout "$TESTS_S" python3 -m pytest "$T" -q -p no:cacheprovider -k "tcs2 and repeated" >"$OUT/tests-b.log" 2>&1 &
  check_shards s12_tcs "$TESTS_S" 8
  wait
  echo "phase 1 (tests + checks) $(( $(date +%s) - t0 )) s"
  tail -n 3 "$OUT"/tests-*.log
  ok=1
  for f in "$OUT"/tests-*.log; do
    if ! grep -qE "[0-9]+ passed" "$f" || grep -qE "[0-9]+ (failed|errors?)\b" "$f"; then ok=0; fi
  done
  echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  if (( ok )); then
    timing_phase s12_tcs "$BENCH_S"
    report_phase s12_tcs --stem "${S12_STEM:-kernels-2026-11-30-s12-tcs2}" --command "bash bench/kernels/s12_tcs2.sh $*"
  else
    echo "== GPU tests did not pass: no timing"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/log.txt"
