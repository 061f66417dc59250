#!/usr/bin/env bash
# Session 12: the 7B int4 decode step at batch 4 / 8 / 16 with the tree's tuner table (session 12's tcs picks) and
# the table before session 12 alternating round by round on one runner (s9_decode.py, bench_decode.py's rows).
# OLD_TABLE: that earlier table, e.g. `git show 0308b64:workers/inlaid_worker/kernels/tuned/nvidia-h200.json > FILE`.
# Usage (device, repo root): OUT=... OLD_TABLE=FILE bash bench/kernels/s12_decode.sh [DECODE_S] [ROUNDS]
set -o pipefail
OUT=${OUT:-/tmp/s12-decode-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
DECODE_S=${1:-90} ROUNDS=${2:-8}
DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
     --reps 10 --warmup 2 --batches 4,8,16 --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S")
{
  device_header
  t=$(date +%s)
  S9_TABLES="old=$OLD_TABLE,new=workers/inlaid_worker/kernels/tuned/nvidia-h200.json" INLAID_QMM_TUNED=1 \
    PYTHONUNBUFFERED=1 PYTHONPATH=workers timeout $((DECODE_S + 60)) \
    python3 bench/kernels/s9_decode.py --out "$OUT" --tag s12-tables --shapes 7b --quants int4 --fusions old,new "${DEC[@]}" \
    | grep -E '^\| 7b \| int4 \| [0-9]'
  echo "== decode rc $? in $(( $(date +%s) - t )) s"; date -u
} 2>&1 | tee "$OUT/s12-decode-log.txt"
