#!/usr/bin/env bash
# Session 11, one device call: (1) the quant_tcv GPU tests beside s11_gemv.py's checks (16 processes, which also fill
# Triton's cache), (2) s11_gemv.py's timing alone (tcv candidates vs the shipped picks, iso / pdl, 32-layer chains),
# (3) its report, (4) the new table (tuned_table.py --merge), (5) the 7B int4 decode step at batch 2-16 with the old
# and the new table alternating round by round on one runner (s9_decode.py), (6) the shipped table from that
# comparison (s9_gemv.py final: new picks only in the batch buckets whose step was not slower). Everything comes back
# in $OUT/s11-gemv.tgz (+ the reports).
# Usage (device): OUT=... bash bench/kernels/s11_gemv.sh [BENCH_S] [DECODE_S] [ROUNDS]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s11-out /tmp/s11-gemv
BENCH_S=${1:-130}
DECODE_S=${2:-70}
ROUNDS=${3:-6}
{
  device_header
  cp "$TABLE" "$WORK/old-table.json"
  t0=$(date +%s)
  timeout 100 python3 -m pytest workers/tests/kernels/test_quant_tcv.py workers/tests/kernels/test_qmm_tuned.py \
    -q -p no:cacheprovider >"$OUT/tests.log" 2>&1 &
  check_shards s11_gemv 100 15
  phase1_done "tests + checks" 6
  echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  if ! grep -qE "^[0-9]+ passed" "$OUT/tests.log" || grep -qE "[0-9]+ (failed|errors?)\b" "$OUT/tests.log"; then
    echo "== GPU tests did not pass: timing only (no table, no decode)"; tail -n 40 "$OUT/tests.log"; DECODE_S=0
  fi
  (( BENCH_S > 0 )) && timing_phase s11_gemv "$BENCH_S"
  (( BENCH_S > 0 )) && report_phase s11_gemv
  (( BENCH_S > 0 && DECODE_S > 0 )) && python3 bench/kernels/tuned_table.py "$OUT/kernels-2026-11-30-s11-gemv.json" --merge && cp "$TABLE" "$WORK/new-table.json"
  cp "$WORK/old-table.json" "$TABLE"
  t2=$(date +%s)
  [[ -f "$WORK/new-table.json" ]] && S9_TABLES="old=$WORK/old-table.json,new=$WORK/new-table.json" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 \
    PYTHONPATH=workers timeout $((DECODE_S + 60)) python3 bench/kernels/s9_decode.py --out "$OUT" --tag s11-tables \
    --shapes 7b --quants int4 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 10 --warmup 2 --batches 2,4,8,16 --fusions old,new \
    --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S" | grep -E '^\| 7b'
  echo "== decode rc $? in $(( $(date +%s) - t2 )) s"
  [[ -f "$OUT/decode-2026-11-30-s11-tables.json" ]] && python3 bench/kernels/s9_gemv.py final --out "$WORK" --decode "$OUT/decode-2026-11-30-s11-tables.json" \
    --old-table "$WORK/old-table.json" --new-table "$WORK/new-table.json" --dest-table "$WORK/final-table.json"
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$WORK/log.txt"
archive_work s11-gemv
