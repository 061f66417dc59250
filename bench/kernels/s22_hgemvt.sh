#!/bin/bash
# Session 22 (helper A): hgemvt + ring-read floor, one device call (s22_hgemvt.py docstring). OUT: the report folder;
# S22_SET=next: the follow-up sweep (s22_hgemvt.next_sweep; call 3 ran the default set with CHECK_S=55 TEST_S=55 BENCH_S=95,
# too short for the bench phase: give it BENCH_S=300).
source bench/kernels/device_env.sh && device_header
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels
OUT=${OUT:-/tmp/s22out}; WORK=/tmp/s22work; rm -rf "$WORK"; mkdir -p "$OUT" "$WORK"
S=${SHARDS:-12}
t0=$(date +%s)
for i in $(seq 0 $((S - 1))); do
  timeout ${CHECK_S:-170} python3 bench/kernels/s22_hgemvt.py check --extra --out "$WORK" --shard $i --shards $S >"$WORK/check-$i.log" 2>&1 &
done
timeout ${TEST_S:-200} python3 -m pytest -v -p no:cacheprovider workers/tests/kernels/test_quant_hgemvt.py >"$OUT/tests.log" 2>&1 &
wait
echo "phase 1 $(( $(date +%s) - t0 )) s"; tail -n 4 "$OUT/tests.log"; grep -h "error" "$WORK"/check-*.log | head -5 | cut -c1-400
cat "$WORK"/check-*.log > "$OUT/check.log"
timeout ${BENCH_S:-220} python3 bench/kernels/s22_hgemvt.py bench --extra --out "$WORK" > "$OUT/bench.log" 2>&1
echo "phase 2 $(( $(date +%s) - t0 )) s"; tail -n 3 "$OUT/bench.log" | cut -c1-300
python3 bench/kernels/s22_hgemvt.py report --out "$WORK" --dest "$OUT"
