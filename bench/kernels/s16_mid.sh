#!/usr/bin/env bash
# Session 16 (issue 4: the int4 GEMM at M = 17..64), one device call:
#  (1) test_quant_tcs_mid.py's GPU tests beside s16_mid.py's checks (8 processes: every tcs candidate of buckets 32 / 64
#      and the shipped pick at the 7B shapes, M = 32 / 64, PDL off and on)
#  (2) if the tests passed: the timing alone (iso / pdl, bf16 cuBLAS, copy bandwidth), its report (+ -ship.json: best
#      tcs candidate >= 3% faster than the shipped pick iso and pdl)
#  (3) if (2) shipped rows: the 7B decode step at batches 32 / 64, the tree's table (old) against it merged with the
#      ship rows (new), alternating round by round on one runner (s16_mid_decode.py, device time)
#  (4) if the call is young enough (S16_13B_BEFORE_S): (1)-(3) for the 13B shapes (checks, timing, decode)
# Usage (device): OUT=... bash bench/kernels/s16_mid.sh [CHECK_S] [BENCH_S] [DECODE_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s16-out /tmp/s16-mid
CHECK_S=${1:-120} BENCH_S=${2:-150} DECODE_S=${3:-100}
export S12_CHAINS=0 S12_KIND= S16_MS=${S16_MS:-32,64}
STEM=${S16_STEM:-kernels-2026-12-01-s16-mid}
CMD="OUT=\$OUT bash bench/kernels/s16_mid.sh $*"
cp "${S16_OLD_TABLE:-$TABLE}" /tmp/s16-old-table.json  # "old": the tree's table (b4fa76e's on 2026-12-01)

# one model size: checks (+ the GPU tests when $2 = 1), timing, report, ship, decode A/B
run_size() {  # SIZE(7b|13b) TESTS SHAPES
  local size=$1 tests=$2 stem="$STEM-$1" t1
  export S16_SHAPES=$3
  WORK=/tmp/s16-mid-$size && rm -rf "$WORK" && mkdir -p "$WORK"
  t1=$(date +%s)
  if (( tests )); then
    timeout "$CHECK_S" python3 -m pytest workers/tests/kernels/test_quant_tcs_mid.py -q -p no:cacheprovider >"$OUT/tests.log" 2>&1 &
  fi
  check_shards s16_mid "$CHECK_S" 8
  wait
  echo "[$size] phase 1 (checks$( ((tests)) && echo ' + tests')) $(( $(date +%s) - t1 )) s"
  local ok=1
  if (( tests )); then
    tail -n 3 "$OUT/tests.log"
    if ! grep -qE "[0-9]+ passed" "$OUT/tests.log" || grep -qE "[0-9]+ (failed|errors?)\b" "$OUT/tests.log"; then ok=0; fi
  fi
  echo "[$size] checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | cut -c1-300 | head -5
  cat "$WORK"/check-*.jsonl > "$OUT/$stem-check.jsonl"
  if (( ! ok )); then echo "== GPU tests did not pass: no timing"; grep -E "FAILED|Error" "$OUT/tests.log" | head -20; return 1; fi
  timing_phase s16_mid "$BENCH_S"
  python3 bench/kernels/s16_mid.py report --out "$WORK" --dest "$OUT" --stem "$stem" --command "$CMD"
  local ship="$OUT/$stem-ship.json"
  if [[ -f "$ship" ]] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$ship'))['bench'] else 1)"; then
    python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" "$OUT/$STEM-new-table.json"
    t1=$(date +%s)
    INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 timeout "$DECODE_S" python3 bench/kernels/s16_mid_decode.py --out "$OUT" \
      --tag "decode-2026-12-01-s16-mid" --shape "$size" --batches "${S16_BATCHES:-32,64}" --rounds "${S16_ROUNDS:-8}" \
      --tables "old=/tmp/s16-old-table.json,new=$TABLE"
    echo "[$size] decode rc $? in $(( $(date +%s) - t1 )) s"
  else
    echo "== [$size] no ship rows: no decode comparison"
  fi
}

{
  device_header
  t0=$(date +%s)
  run_size 7b 1 "7B qkv 4096x12288,7B o 4096x4096,7B gate/up 4096x22016,7B down 11008x4096,7B up 4096x11008"
  if (( $(date +%s) - t0 < ${S16_13B_BEFORE_S:-230} )); then
    run_size 13b 0 "13B qkv 5120x15360,13B o 5120x5120,13B gate/up 5120x27648,13B down 13824x5120"
  else
    echo "== past ${S16_13B_BEFORE_S:-230} s: no 13B"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
