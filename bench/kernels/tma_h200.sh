#!/usr/bin/env bash
# One device call for the TMA read floor (bench/kernels/tma_read.py, helper H2 2026-11-30): the TMA configs build
# and pass their read check in SHARDS parallel processes (with the v7 GEMV picks warmed beside them), then the
# timing runs alone, then the report (JSON + markdown) goes to $OUT. Usage on the device: bash bench/kernels/tma_h200.sh
# (call 1: the full sweep, kernels-2026-11-30-tma-read; CALL2=1: tma_read.py's small set, read time vs bytes and the
# quant_tcg configs at M = 2..16, kernels-2026-11-30-tma-floor)
set -o pipefail
OUT=${OUT:-/tmp/tma-out}
WORK=/tmp/tma-work
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, device_header
SHARDS=${SHARDS:-12}
C2=${CALL2:+--call2}
STEM=kernels-2026-11-30-tma-${CALL2:+floor}
[ -n "$CALL2" ] || STEM=kernels-2026-11-30-tma-read
{
  device_header
  t0=$(date +%s)
  for i in $(seq 0 $((SHARDS - 1))); do
    timeout "${COMPILE_S:-70}" python3 bench/kernels/tma_read.py compile --out "$WORK" --shard "$i" --shards "$SHARDS" $C2 \
      >"$WORK/compile-$i.log" 2>&1 &
  done
  timeout "${COMPILE_S:-70}" python3 bench/kernels/tma_read.py warm --out "$WORK" $C2 >"$WORK/warm.log" 2>&1 &
  wait
  echo "phase 1 (build + check) $(( $(date +%s) - t0 )) s"
  tail -qn 1 "$WORK"/compile-*.log "$WORK/warm.log"; grep -h "False\|Error" "$WORK"/compile-*.log | head -n 8
  t1=$(date +%s)
  timeout "${BENCH_S:-120}" python3 bench/kernels/tma_read.py bench --out "$WORK" $C2 >"$WORK/bench.log" 2>&1
  echo "phase 2 (timing) $(( $(date +%s) - t1 )) s"; tail -n 3 "$WORK/bench.log"
  python3 bench/kernels/tma_read.py report --out "$WORK" --dest "$OUT" --command "${CALL2:+CALL2=1 }bash bench/kernels/tma_h200.sh" --stem "$STEM"
  cp "$WORK/bench.log" "$OUT/bench.log"
  date -u
} 2>&1 | tee "$OUT/log.txt"
