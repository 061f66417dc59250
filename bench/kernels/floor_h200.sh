#!/usr/bin/env bash
# One device call for the v6 read-pattern sweep (bench/kernels/gemv_floor.py --sweep): the kernels compile in
# SHARDS parallel processes first (fills Triton's cache), then one process times everything alone.
# Usage on the device: OUT=dir bash bench/kernels/floor_h200.sh   (COMPILE_S, TIME_S: phase timeouts)
set -o pipefail
OUT=${OUT:-/tmp/floor-out}
mkdir -p "$OUT"
export PYTHONPATH=workers:bench/kernels
SHARDS=${SHARDS:-12}
{
  date -u
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
  t0=$(date +%s)
  for i in $(seq 0 $((SHARDS - 1))); do
    timeout "${COMPILE_S:-40}" python3 bench/kernels/gemv_floor.py --sweep --phase compile --shard "$i" \
      --shards "$SHARDS" --out /tmp/floor-compile 2>"/tmp/floor-compile-$i.err" &
  done
  wait
  echo "compile phase $(( $(date +%s) - t0 )) s"; tail -qn 2 /tmp/floor-compile-*.err  # logs stay off $OUT: a call returns 8 files
  t1=$(date +%s)
  timeout "${TIME_S:-40}" python3 bench/kernels/gemv_floor.py --sweep --phase time --out "$OUT" | tail -n 3
  echo "timing phase $(( $(date +%s) - t1 )) s"
  date -u
} 2>&1 | tee "$OUT/log.txt"
