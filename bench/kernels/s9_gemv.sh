#!/usr/bin/env bash
# Session 9, one device call: (1) s9_gemv.py's checks (every candidate of every (shape, M), PDL off and on; 16
# processes, which also fill Triton's cache) beside the BALANCE / shipped-table tests, (2) s9_gemv.py's timing alone
# (retune with quant_tcg.BALANCE on, 32-layer chains under PDL), (3) its report, (4) the new table (tuned_table.py
# --merge), (5) the 7B int4 decode step at batch 1-16 with the old and the new table alternating round by round on
# one runner (s9_decode.py), (6) the shipped table from that comparison (s9_gemv.py final), (7) the GPU tests with
# that table in place (if the call has time left). Everything comes back in $OUT/s9-gemv.tgz (+ the reports).
# Usage (device): OUT=... bash bench/kernels/s9_gemv.sh [BENCH_S] [DECODE_S] [ROUNDS] [END_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s9-out /tmp/s9-gemv
BENCH_S=${1:-200}
DECODE_S=${2:-90}
ROUNDS=${3:-8}
END_S=${4:-570}  # the whole command stays inside this many seconds (the device's limit is 600)
source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
GPU_TESTS=("${GPU_MODEL_TESTS[@]}" "$TRITON_BACKEND_TEST" "${GPU_ENGINE_TESTS[@]}")
{
  device_header
  cp "$TABLE" "$WORK/old-table.json"
  t0=$(date +%s)
  timeout 140 python3 -m pytest workers/tests/kernels/test_tcg_balance.py workers/tests/kernels/test_qmm_tuned.py \
    -q -p no:cacheprovider >"$OUT/tests.log" 2>&1 &
  check_shards s9_gemv 150 16
  phase1_done "tests + checks" 3
  echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  timing_phase s9_gemv "$BENCH_S"
  report_phase s9_gemv
  python3 bench/kernels/tuned_table.py "$OUT/kernels-2026-11-30-s9-gemv.json" --merge && cp "$TABLE" "$WORK/new-table.json"
  cp "$WORK/old-table.json" "$TABLE"
  t2=$(date +%s)
  S9_TABLES="old=$WORK/old-table.json,new=$WORK/new-table.json" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 \
    PYTHONPATH=workers timeout $((DECODE_S + 60)) python3 bench/kernels/s9_decode.py --out "$OUT" --tag s9-tables \
    --shapes 7b --quants int4 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 10 --warmup 2 --batches 1,2,4,8,16 --fusions old,new \
    --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S" | grep -E '^\| 7b'
  echo "== decode rc $? in $(( $(date +%s) - t2 )) s"
  python3 bench/kernels/s9_gemv.py final --out "$WORK" --decode "$OUT/decode-2026-11-30-s9-tables.json" \
    --old-table "$WORK/old-table.json" --new-table "$WORK/new-table.json" --dest-table "$TABLE" \
    && cp "$TABLE" "$WORK/final-table.json"
  left=$(( END_S - ($(date +%s) - t0) - 25 ))
  if (( left > 60 )); then
    echo "== GPU tests (final table, INLAID_QMM_TUNED=1), limit $left s"
    INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout "$left" python3 -m pytest -q -p no:cacheprovider -n 8 \
      --dist loadfile "${GPU_TESTS[@]}" >"$WORK/gpu-tests.log" 2>&1
    echo "== GPU tests rc $?"; tail -n 15 "$WORK/gpu-tests.log"
  else
    echo "== GPU tests skipped: $left s left"
  fi
  date -u
} 2>&1 | tee "$WORK/log.txt"
archive_work s9-gemv
