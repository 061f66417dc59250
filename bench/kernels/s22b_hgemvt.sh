#!/bin/bash
# Session 22 (helper A2): the reworked hgemvt (S22_SET=b of s22_hgemvt.py: producer warp / 8 consumer warps, zeros
# without a layout conversion, NB constexpr, 16-byte x build) vs hgemvr and bf16 cuBLAS, 7B up and down, M = 1 / 2,
# iso and PDL, plus 3 ring-read floors per shape; the GPU tests in 9 parallel pytest processes. One device call.
# Call 2: S22_SET=b2 SKIP_TESTS=1 STEM=...-call2 (the b2 sweep, M = 1, no floors, no tests).
source bench/kernels/device_env.sh && device_header
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels S22_SET=${S22_SET:-b}
OUT=${OUT:-/tmp/s22bout}; WORK=/tmp/s22bwork; rm -rf "$WORK"; mkdir -p "$OUT" "$WORK"
S=${SHARDS:-8}
t0=$(date +%s)
for i in $(seq 0 $((S - 1))); do
  timeout ${CHECK_S:-140} python3 bench/kernels/s22_hgemvt.py check --out "$WORK" --shard $i --shards $S >"$WORK/check-$i.log" 2>&1 &
done
T=workers/tests/kernels/test_quant_hgemvt.py
n=0
[ -n "$SKIP_TESTS" ] || for shape in 4096-11008 11008-4096 5120-13824 13824-5120; do
  for sym in True False; do
    n=$((n + 1))
    timeout ${TEST_S:-140} python3 -m pytest -v -p no:cacheprovider -k "gpu_matches and -$sym-$shape]" $T >"$WORK/tests-$n.log" 2>&1 &
  done
done
[ -n "$SKIP_TESTS" ] || timeout ${TEST_S:-140} python3 -m pytest -v -p no:cacheprovider -k "not gpu_matches" $T >"$WORK/tests-0.log" 2>&1 &
wait
echo "phase 1 $(( $(date +%s) - t0 )) s"
[ -n "$SKIP_TESTS" ] || cat "$WORK"/tests-*.log > "$OUT/tests.log"
grep -hE "passed|failed|error" "$WORK"/tests-*.log | grep -E "^=|in [0-9.]+s" ; grep -hE "FAILED|Error" "$WORK"/tests-*.log | head -5 | cut -c1-300
grep -h "error" "$WORK"/check-*.log | head -5 | cut -c1-400
cat "$WORK"/check-*.log > "$OUT/check.log"
timeout ${BENCH_S:-150} python3 bench/kernels/s22_hgemvt.py bench --out "$WORK" > "$OUT/bench.log" 2>&1
echo "phase 2 $(( $(date +%s) - t0 )) s"; tail -n 3 "$OUT/bench.log" | cut -c1-300
python3 bench/kernels/s22_hgemvt.py report --out "$WORK" --dest "$OUT" --top 12 --stem ${STEM:-kernels-2026-12-02-s22-hgemvt2} \
  --command "${CMD:-bash bench/kernels/s22b_hgemvt.sh}"
