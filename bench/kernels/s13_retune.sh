#!/usr/bin/env bash
# Session 13 retune (helper H6), one device call:
#  (1) s13_retune.py check: every candidate (tcs2a, tcsa on 7B, the table's pick) of each point, PDL off and on, vs
#      the fp32 dequantized product (flag > 1e-3), CHECK_SHARDS processes (they also compile), 7B first; beside them
#      the GPU tests of test_quant_tcs.py (-n 4; they do not read the tuner table)
#  (2) s13_retune.py bench (alone, 7B first) and report: <stem>.md/.json, <stem>-ship.json (7B rows meeting the ship
#      rule: best tcs2a >= 3% faster than the table's pick iso and pdl), <stem>-13b-ship.json (not merged here)
#  (3) if 7B rows ship: the 7B int4 decode step at the affected batches (M buckets 2/4/8/16 = batches), the tree's
#      table (old) vs it merged with the ship rows (new) alternating round by round on one runner (s9_decode.py);
#      s13_retune_decode.py keeps the rows of the batches whose new step <= old -> <stem>-final-ship.json, merged
#  (4) the GPU tests that read the table (test_qmm_tuned, test_decode_graphs; -n 8) with the merged table
# Every phase under `timeout`, the whole within TOTAL_S; everything ends in $OUT/s13-retune-all.tgz beside the
# reports (the device returns at most 8 files a call).
# Usage (device, repo root): OUT=... bash bench/kernels/s13_retune.sh [CHECK_S] [BENCH_S] [DECODE_S] [TOTAL_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s13r-out /tmp/s13r
CHECK_S=${1:-100} BENCH_S=${2:-70} DECODE_S=${3:-45} TOTAL_S=${4:-310} ROUNDS=${ROUNDS:-10}
TESTS=(workers/tests/kernels/test_quant_tcs.py workers/tests/kernels/test_qmm_tuned.py workers/tests/model/test_decode_graphs.py)
STEM=kernels-2026-11-30-s13-retune
DSTEM=decode-2026-11-30-s13-retune
left() { echo $(( TOTAL_S - ($(date +%s) - t0) )); }
{
  device_header
  t0=$(date +%s)
  INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout "$CHECK_S" python3 -m pytest -q -n 4 -p no:cacheprovider "${TESTS[0]}" \
    > "$OUT/gpu-tests-2026-11-30-s13-retune-tcs.log" 2>&1 &
  check_shards s13_retune "$CHECK_S" "${CHECK_SHARDS:-10}"
  wait
  echo "phase 1 (checks + test_quant_tcs) $(( $(date +%s) - t0 )) s; checked $(cat "$WORK"/check-*.jsonl | wc -l)"
  tail -n 2 "$OUT/gpu-tests-2026-11-30-s13-retune-tcs.log"
  grep -h '"error"' "$WORK"/check-*.jsonl | cut -c1-300 | head -5
  cat "$WORK"/check-*.jsonl > "$OUT/$STEM-check.jsonl"
  b=$(( $(left) - 130 )); (( b > BENCH_S )) && b=$BENCH_S
  timing_phase s13_retune "$b"
  python3 bench/kernels/s13_retune.py report --out "$WORK" --dest "$OUT" --stem "$STEM" \
    --command "OUT=\$OUT bash bench/kernels/s13_retune.sh $*" | tail -n 40
  ship="$OUT/$STEM-ship.json"
  batches=$(python3 -c "import json; print(','.join(str(m) for m in sorted({int(r['M']) for r in json.load(open('$ship'))['bench']})))" 2>/dev/null)
  echo "== ship rows at batches: '${batches}'; $(left) s left"
  cp "$TABLE" /tmp/s13r-old-table.json
  if [[ -n "$batches" ]] && (( $(left) > DECODE_S + 60 )); then
    python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" /tmp/s13r-new-table.json
    t3=$(date +%s)
    DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
         --reps 10 --warmup 2 --batches "$batches" --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S")
    S9_TABLES="old=/tmp/s13r-old-table.json,new=/tmp/s13r-new-table.json" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 \
      timeout $(( DECODE_S + 40 )) python3 bench/kernels/s9_decode.py --out "$WORK/decode" --tag s13-retune \
      --shapes 7b --quants int4 --fusions old,new "${DEC[@]}" > "$OUT/$DSTEM.log" 2>&1
    echo "decode rc $? in $(( $(date +%s) - t3 )) s"
    grep -E '^\| 7b \| int4 \| [0-9]' "$OUT/$DSTEM.log"
    for f in "$WORK"/decode/decode-*-s13-retune.md "$WORK"/decode/decode-*-s13-retune.json; do
      [[ -f "$f" ]] && cp "$f" "$OUT/$DSTEM.${f##*.}"
    done
    cp /tmp/s13r-old-table.json "$TABLE"
    if [[ -f "$OUT/$DSTEM.json" ]]; then
      python3 bench/kernels/s13_retune_decode.py "$OUT/$DSTEM.json" "$ship" "$OUT/$STEM-final-ship.json" \
        --md "$OUT/$DSTEM-decision.md" && python3 bench/kernels/tuned_table.py "$OUT/$STEM-final-ship.json" --merge
    fi
  else
    echo "== no decode comparison (nothing to ship or no time)"
  fi
  cp "$TABLE" "$OUT/$STEM-table-tested.json"
  tt=$(( $(left) - 5 ))
  if (( tt > 20 )); then
    t4=$(date +%s)
    INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout "$tt" python3 -m pytest -q -n 8 -p no:cacheprovider \
      "${TESTS[@]:1}" > "$OUT/gpu-tests-2026-11-30-s13-retune.log" 2>&1
    echo "tests rc $? in $(( $(date +%s) - t4 )) s (limit $tt)"; tail -n 3 "$OUT/gpu-tests-2026-11-30-s13-retune.log"
  else
    echo "== no time left for the tests"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
cp -r "$WORK"/check-*.jsonl "$WORK"/check-*.log "$WORK"/bench.json "$OUT/" 2>/dev/null
tar czf /tmp/s13-retune-all.tgz -C "$OUT" . && find "$OUT" -type f ! -name "$STEM.md" ! -name "$STEM.json" \
  ! -name "$STEM-ship.json" ! -name "$STEM-log.txt" ! -name "$DSTEM.md" ! -name "$DSTEM-decision.md" \
  ! -name "$STEM-final-ship.json" -delete && mv /tmp/s13-retune-all.tgz "$OUT/"
