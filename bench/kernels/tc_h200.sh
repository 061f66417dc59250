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
  for i in $(seq 0 $((SHARDS - 1))); do
    [ -n "$SKIP_GUARD" ] && break
    timeout "${GUARD_S:-100}" python3 bench/kernels/tc_h200.py guard --out "$WORK" --shard "$i" --shards "$SHARDS" &
  done
  wait
  echo "phase 1 (tests + guard) $(( $(date +%s) - t0 )) s"; tail -n 5 "$OUT/tests.log"
  t1=$(date +%s)
  timeout "${BENCH_S:-140}" python3 bench/kernels/tc_h200.py bench --out "$WORK" ${SHAPES:+--shapes "$SHAPES"}
  echo "phase 2 (timing) $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/tc_h200.py report --out "$WORK" --dest "$OUT" --command "bash bench/kernels/tc_h200.sh"
  date -u
} 2>&1 | tee "$OUT/log.txt"
