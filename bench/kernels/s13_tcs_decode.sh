#!/usr/bin/env bash
# Session 13 (prepared by helper H2, NOT run: device allowance): the 7B int4 decode step at batch 4 / 8 / 16 with
# three tuner tables alternating round by round on one runner (s13_tcs_decode.py = s9_decode.py + s13_tcs_dispatch):
#   tcs0 = the tree's table with every "tcs" pick run by session 12's K loop (kind tcs0: early slot release)
#   fix  = the tree's table (the same picks, the fixed tcs: slot released after the wgmma)
#   acc  = the tree's table merged with SHIP (default kernels-2026-11-30-s13-tcs-fix-ship.json: 9 tcs2a picks; needs
#          s13_tcs_dispatch here, quant_matmul's dispatcher in production)
# Usage (device, repo root): OUT=... bash bench/kernels/s13_tcs_decode.sh [DECODE_S] [ROUNDS] [SHIP]
set -o pipefail
OUT=${OUT:-/tmp/s13-decode-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
DECODE_S=${1:-90} ROUNDS=${2:-8} SHIP=${3:-bench/results/kernels-2026-11-30-s13-tcs-fix-ship.json}
sed 's/"kind": "tcs"/"kind": "tcs0"/' "$TABLE" > /tmp/s13-tcs0-table.json
cp "$TABLE" /tmp/s13-fix-table.json
cp "$TABLE" /tmp/s13-table-backup.json
python3 bench/kernels/tuned_table.py "$SHIP" --merge && cp "$TABLE" /tmp/s13-acc-table.json
cp /tmp/s13-table-backup.json "$TABLE"  # the device copy's table as it was
DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
     --reps 10 --warmup 2 --batches 4,8,16 --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S")
{
  device_header
  t=$(date +%s)
  S9_TABLES="tcs0=/tmp/s13-tcs0-table.json,fix=/tmp/s13-fix-table.json,acc=/tmp/s13-acc-table.json" \
    INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels timeout $((DECODE_S + 60)) \
    python3 bench/kernels/s13_tcs_decode.py --out "$OUT" --tag s13-tcs-decode --shapes 7b --quants int4 \
    --fusions tcs0,fix,acc "${DEC[@]}" | grep -E '^\| 7b \| int4 \| [0-9]'
  echo "== decode rc $? in $(( $(date +%s) - t )) s"; date -u
} 2>&1 | tee "$OUT/s13-decode-log.txt"
