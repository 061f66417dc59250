#!/usr/bin/env bash
# Session 17, helper H7 (issue 4), ONE device call (<= 195 s): quant_tcsx at M = 256 (the tuner's bucket 256,
# quant_matmul_config.TCSX_PLANS[256]: block_m 128 = two row blocks, 4 / 5 stages, splits over both row blocks) and
# M = 512 (bench-only, s17_tcsx.VARIANTS[512]) on the 7B / 13B decode shapes, as s17_h1.sh ran buckets 32 / 64 / 128:
#  (1) s17_tcsx.py's checks (every shipped pick and every tcsx candidate at M = 256 / 512, PDL off and on, S17_STRESS
#      launches against tcs_reference; one process per variant and model, S17_SHARD_BY_MODEL=1), all at once
#  (2) the timing alone (iso / PDL, bf16 cuBLAS, the shipped pick, every passing candidate with its pre-pass through
#      quant_matmul's dispatcher), the report and its ship rows (best tcsx >= 1.03x the shipped pick iso AND PDL, bucket
#      256 only: 512 is bench-only)
#  (3) if ship rows: tuned_table.py --merge into the tree's table (new) and the decode step at batch 256, old table
#      against new, alternating round by round on one runner (s17_m256_decode.py = s16_mid_decode.py with 256 cached
#      tokens a sequence: 512 would not fit twice in memory at batch 256), 7B then 13B while time is left
#  (4) everything in one archive (the device returns only a few files)
# Every phase runs on S17_TREE (HEAD's workers/inlaid_worker + this change's quant_matmul_config.py, made on the host by
# PREP=1 and carried), so other helpers' uncommitted edits in the checkout stay out of it.
# Usage: PREP=1 bash bench/kernels/s17_m256.sh (host), then on the device (repo root, carry tmp/m256tree):
#   OUT=... bash bench/kernels/s17_m256.sh   (run tool: timeout_s 195)
set -o pipefail
if [ "${PREP:-0}" = 1 ]; then  # host (no GPU): HEAD + this change's kernel files
  D=tmp/m256tree && rm -rf $D && mkdir -p $D && git archive HEAD workers/inlaid_worker | tar -x -C $D
  cp -r workers/inlaid_worker/gen $D/workers/inlaid_worker/ 2>/dev/null
  for f in quant_matmul_config.py; do
    cp workers/inlaid_worker/kernels/$f $D/workers/inlaid_worker/kernels/$f
  done
  du -sh $D && exit 0
fi
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
DTREE=workers
[[ -d "${S17_TREE:-tmp/m256tree/workers}/inlaid_worker" ]] && DTREE=${S17_TREE:-tmp/m256tree/workers}
export PYTHONPATH="$DTREE:bench/kernels" S17_MS=${S17_MS:-256,512} S17_SHARD_BY_MODEL=1
OUT=${OUT:-/tmp/s17m256-out}
WORK=/tmp/s17-m256
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
export S17_STRESS=${S17_STRESS:-4} PYTHONUNBUFFERED=1
CHECK_S=${CHECK_S:-65} BENCH_S=${BENCH_S:-40} TOTAL_S=${TOTAL_S:-185} P=${P:-10}
DAY=$(date -u +%F)
STEM=kernels-$DAY-s17-tcsx-m256
DTAG=decode-$DAY-s17-tcsx-m256
CMD="OUT=\$OUT bash bench/kernels/s17_m256.sh"
cp "$TABLE" "$WORK/old-table.json"  # "old": the tree's table (HEAD's)
{
  device_header
  echo "tree: $DTREE; S17_MS=$S17_MS"
  t0=$(date +%s)
  NSH=$(python3 -c "import s17_tcsx; print(len(s17_tcsx.SHARDS))")
  deadline=$(( t0 + CHECK_S ))
  for i in $(seq 0 $((NSH - 1))); do
    while (( $(jobs -rp | wc -l) >= P )); do wait -n; done
    left=$(( deadline - $(date +%s) ))
    if (( left < 8 )); then echo "check shard $i not started: phase 1 out of time"; continue; fi
    timeout "$left" python3 bench/kernels/s17_tcsx.py check --out "$WORK" --shard "$i" >"$WORK/check-$i.log" 2>&1 &
  done
  wait
  echo "== phase 1 ($NSH check shards) $(( $(date +%s) - t0 )) s"
  echo "check rows: $(cat "$WORK"/check-*.jsonl 2>/dev/null | wc -l);" \
    "with an error: $(cat "$WORK"/check-*.jsonl | grep -c '"error"')"
  grep -h '"error"' "$WORK"/check-*.jsonl 2>/dev/null | cut -c1-300 | head -4
  for i in $(seq 0 $((NSH - 1))); do tail -n 1 "$WORK/check-$i.log" | cut -c1-200; done
  t1=$(date +%s)
  timeout "$BENCH_S" python3 bench/kernels/s17_tcsx.py bench --out "$WORK" | cut -c1-300
  echo "== phase 2 (timing) rc ${PIPESTATUS[0]} in $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/s17_tcsx.py report --out "$WORK" --dest "$OUT" --stem "$STEM" --command "$CMD" \
    | sed -n '/^## Shipped pick vs best/,/^## Every timed/p'
  ship="$OUT/$STEM-ship.json"
  if [[ -f "$ship" ]] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$ship'))['bench'] else 1)"; then
    python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" "$OUT/$STEM-new-table.json"
    for size in 7b 13b; do
      left=$(( t0 + TOTAL_S - $(date +%s) ))
      if (( left < 40 )); then echo "== no $size decode: ${left} s left"; continue; fi
      t2=$(date +%s)
      INLAID_QMM_TUNED=1 timeout "$left" python3 bench/kernels/s17_m256_decode.py \
        --out "$WORK" --tag "$DTAG" --shape "$size" --batches "256" --rounds 8 \
        --tables "old=$WORK/old-table.json,new=$TABLE" 2>&1 | grep -v -e UserWarning -e _warn_once
      echo "== [$size] decode rc ${PIPESTATUS[0]} in $(( $(date +%s) - t2 )) s"
      cp "$WORK/$DTAG-$size.json" "$OUT/" 2>/dev/null
    done
  else
    echo "== no ship rows: no table change, no decode comparison"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
mkdir -p "$WORK/out" && cp -r "$OUT"/. "$WORK/out"/ && tar czf "/tmp/$STEM.tgz" -C "$WORK" . \
  && mv "/tmp/$STEM.tgz" "$OUT/" && rm -f "$OUT/$STEM.json"
ls -la "$OUT"
