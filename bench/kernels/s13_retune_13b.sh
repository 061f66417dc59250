#!/usr/bin/env bash
# Session 13 retune (helper H6), second device call: the decode-step check of the 13B rows that met the kernel ship
# rule in s13_retune.sh's call (kernels-2026-11-30-s13-retune-13b-ship.json: 13B qkv / gate-up at M = 16), with
# controls, on one runner alternating round by round (s9_decode.py):
#   old = the table before the retune (kernels-2026-11-30-s13-retune-table-before.json)
#   new = the tree's table (the 7B M = 2 rows of the first call merged) + the 13B ship rows
#   points 13B and 7B at batch 2 and 16: 13B b16 (the 13B rows), 7B b2 (the 7B rows again, a repeat), 13B b2 and
#   7B b16 (same picks in both tables: controls, the run's noise)
# s13_retune_decode.py keeps the rows of the (model, batch) points whose new step <= old -> <stem>-final-ship.json;
# then the GPU tests that read the table (test_qmm_tuned, test_decode_graphs) with old + those rows merged.
# Usage (device, repo root): OUT=... bash bench/kernels/s13_retune_13b.sh [DECODE_S] [TOTAL_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s13r13-out /tmp/s13r13
DECODE_S=${1:-80} TOTAL_S=${2:-145} ROUNDS=${ROUNDS:-10}
STEM=kernels-2026-11-30-s13-retune-13b
DSTEM=decode-2026-11-30-s13-retune-13b
OLD=bench/results/kernels-2026-11-30-s13-retune-table-before.json
SHIPS=(bench/results/kernels-2026-11-30-s13-retune-final-ship.json bench/results/kernels-2026-11-30-s13-retune-13b-ship.json)
{
  device_header
  t0=$(date +%s)
  python3 bench/kernels/tuned_table.py "${SHIPS[1]}" --merge && cp "$TABLE" /tmp/s13r13-new-table.json
  python3 -c "import json, sys; a, b = (json.load(open(p)) for p in sys.argv[1:]); a['bench'] += b['bench']; \
json.dump(a, open('/tmp/s13r13-ship.json', 'w'), indent=1)" "${SHIPS[@]}"
  DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
       --reps 10 --warmup 2 --batches 2,16 --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S")
  S9_TABLES="old=$OLD,new=/tmp/s13r13-new-table.json" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 \
    timeout $(( DECODE_S + 40 )) python3 bench/kernels/s9_decode.py --out "$WORK/decode" --tag s13-retune-13b \
    --shapes 13b,7b --quants int4 --fusions old,new "${DEC[@]}" > "$OUT/$DSTEM.log" 2>&1
  echo "decode rc $? in $(( $(date +%s) - t0 )) s"
  grep -E '^\| 1?[37]b \| int4 \| [0-9]' "$OUT/$DSTEM.log"
  for f in "$WORK"/decode/decode-*-s13-retune-13b.md "$WORK"/decode/decode-*-s13-retune-13b.json; do
    [[ -f "$f" ]] && cp "$f" "$OUT/$DSTEM.${f##*.}"
  done
  cp "$OLD" "$TABLE"
  if [[ -f "$OUT/$DSTEM.json" ]]; then
    python3 bench/kernels/s13_retune_decode.py "$OUT/$DSTEM.json" /tmp/s13r13-ship.json "$OUT/$STEM-final-ship.json" \
      --md "$OUT/$DSTEM-decision.md" && python3 bench/kernels/tuned_table.py "$OUT/$STEM-final-ship.json" --merge
  fi
  cp "$TABLE" "$OUT/$STEM-table-tested.json"
  tt=$(( TOTAL_S - ($(date +%s) - t0) - 5 ))
  if (( tt > 20 )); then
    t4=$(date +%s)
    INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout "$tt" python3 -m pytest -q -n 4 -p no:cacheprovider \
      workers/tests/kernels/test_qmm_tuned.py workers/tests/model/test_decode_graphs.py \
      > "$OUT/gpu-tests-2026-11-30-s13-retune-13b.log" 2>&1
    echo "tests rc $? in $(( $(date +%s) - t4 )) s (limit $tt)"; tail -n 3 "$OUT/gpu-tests-2026-11-30-s13-retune-13b.log"
  else
    echo "== no time left for the tests"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$DSTEM-log.txt"
