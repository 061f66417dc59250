#!/usr/bin/env bash
# Session 8 (helper GV), one device call: (1) the GPU tests of the hgemvr kernels (finish epilogue included) and
# s8_gemv.py's checks (every candidate of every (shape, M), PDL off and on; 16 processes, which also fill Triton's
# cache), (2) s8_gemv.py's timing alone (retune, finish vs store_tile, 32-layer chains under PDL), (3) its report,
# (4) the new table (tuned_table.py --merge, into this copy's kernels/tuned and $OUT), (5) the 7B int4 decode step at
# batch 1-16 with the new and the old table in turn, twice (bench_decode.py, INLAID_QMM_TUNED=1; each run only if
# the call is younger than DECODE_BY s). Each phase has a timeout; everything comes back in $OUT/s8-gemv.tgz.
# Usage (device): OUT=... bash bench/kernels/s8_gemv.sh [BENCH_S] [DECODE_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s8-out /tmp/s8-gemv
BENCH_S=${1:-170}
DECODE_S=${2:-45}
DEC=(--shapes 7b --quants int4 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0
     --prefill-seqs 0 --cost-points 0 --reps 10 --warmup 2 --batches 1,2,4,8,16 --max-seconds "$DECODE_S")
{
  device_header
  cp "$TABLE" "$WORK/old-table.json"
  t0=$(date +%s)
  timeout 140 python3 -m pytest workers/tests/kernels/test_quant_hgemvr_finish.py \
    workers/tests/kernels/test_quant_hgemv_rows.py -q -p no:cacheprovider >"$OUT/tests.log" 2>&1 &
  check_shards s8_gemv 140 16
  phase1_done "tests + checks" 3
  echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  timing_phase s8_gemv "$BENCH_S"
  report_phase s8_gemv
  cp "$WORK"/check-*.jsonl "$OUT"/ 2>/dev/null; tail -n 2 "$WORK"/check-0.log
  python3 bench/kernels/tuned_table.py "$OUT/kernels-2026-11-30-s8-gemv.json" --merge && cp "$TABLE" "$OUT/nvidia-h200.json"
  cp "$TABLE" "$WORK/new-table.json"
  for run in newtable oldtable newtable2 oldtable2; do  # alternating: separate processes differ by up to 0.2 ms
    if (( $(date +%s) - t0 > ${DECODE_BY:-330} )); then echo "== decode $run skipped: time"; continue; fi
    case $run in new*) cp "$WORK/new-table.json" "$TABLE" ;; *) cp "$WORK/old-table.json" "$TABLE" ;; esac
    t2=$(date +%s)
    INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers timeout $((DECODE_S + 50)) \
      python3 bench/engine/bench_decode.py --out "$OUT" --tag "s8-$run" "${DEC[@]}" | grep -E '^\| 7b|Goals|roofline \(' 
    echo "== decode $run rc $? in $(( $(date +%s) - t2 )) s"
  done
  cp "$WORK/new-table.json" "$TABLE"
  date -u
} 2>&1 | tee "$WORK/log.txt"
archive_work s8-gemv
