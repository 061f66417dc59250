#!/usr/bin/env bash
# Session 17, helper H1 (issue 4), ONE device call (<= 240 s): quant_tcsx as a tuner kind at M buckets 32 / 64 / 128.
#  (1) the GPU tests of what changed (test_quant_tcsx.py: the kernel, the dispatcher, a shipped tcsx pick through the
#      tuner replayed in a CUDA graph; test_qmm_tuned.py; test_quant_tcs_mid.py; offline builds left to the CPU runs)
#      beside s17_tcsx.py's checks (the mended harness: every shipped pick and every tuner tcsx candidate at the 7B /
#      13B shapes, M = 64 / 32 / 128, PDL off and on, S17_STRESS launches against tcs_reference), P processes at a time
#  (2) the timing alone (iso / PDL, bf16 cuBLAS, the shipped pick, every passing candidate with its pre-pass through
#      quant_matmul's dispatcher), the report and its ship rows (best tcsx >= 1.03x the shipped pick iso AND PDL)
#  (3) if ship rows: tuned_table.py --merge into the tree's table (new) and the decode step, old table against new,
#      alternating round by round on one runner (s16_mid_decode.py, device time): 7B batches 16 (control) / 32 / 64 /
#      128, then 13B if time is left
#  (4) everything in one archive (the device returns only a few files)
# Run on 2026-12-01 (09:46-09:50 UTC) against HEAD 742aa8f's table: bench/results/kernels-2026-12-01-s17-tcsx-run2.md,
# decode-2026-12-01-s17-tcsx.md; its merged table is the one shipped since (a re-run compares that table with itself
# plus whatever ships then).
# Usage: PREP=1 bash bench/kernels/s17_h1.sh (host), then on the device (repo root, carry tmp/h1tree):
#   OUT=... bash bench/kernels/s17_h1.sh   (run tool: timeout_s 240)
set -o pipefail
if [ "${PREP:-0}" = 1 ]; then  # host (no GPU): the decode A/B's tree, HEAD + this change's kernel files
  D=tmp/h1tree && rm -rf $D && mkdir -p $D && git archive HEAD workers/inlaid_worker | tar -x -C $D
  cp -r workers/inlaid_worker/gen $D/workers/inlaid_worker/ 2>/dev/null
  for f in quant_tcsx.py quant_matmul_config.py quant_matmul.py qmm_tuned.py; do
    cp workers/inlaid_worker/kernels/$f $D/workers/inlaid_worker/kernels/$f
  done
  du -sh $D && exit 0
fi
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
OUT=${OUT:-/tmp/s17h1-out}
WORK=/tmp/s17-tcsx
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
export S17_STRESS=${S17_STRESS:-4} PYTHONUNBUFFERED=1
CHECK_S=${CHECK_S:-80} BENCH_S=${BENCH_S:-60} TOTAL_S=${TOTAL_S:-228} P=${P:-10}
DAY=$(date -u +%F)
STEM=kernels-$DAY-s17-tcsx-run2
DTAG=decode-$DAY-s17-tcsx
CMD="OUT=\$OUT bash bench/kernels/s17_h1.sh"
cp "$TABLE" "$WORK/old-table.json"  # "old": the tree's table
# the decode A/B's package: S17_TREE (carried, git-ignored: HEAD's workers/inlaid_worker with this change's kernel
# files, so other work in flight in the checkout stays out of the A/B; made on the host by PREP=1), else the checkout's
DTREE=workers
[[ -d "${S17_TREE:-tmp/h1tree/workers}/inlaid_worker" ]] && DTREE=${S17_TREE:-tmp/h1tree/workers}
{
  device_header
  t0=$(date +%s)
  timeout "$CHECK_S" python3 -m pytest -q -p no:cacheprovider -n 4 -rs workers/tests/kernels/test_quant_tcsx.py \
    workers/tests/kernels/test_qmm_tuned.py workers/tests/kernels/test_quant_tcs_mid.py -k "not offline" \
    >"$WORK/tests.log" 2>&1 &
  NSH=$(python3 -c "import s17_tcsx; print(len(s17_tcsx.SHARDS))")
  deadline=$(( t0 + CHECK_S ))
  for i in $(seq 0 $((NSH - 1))); do  # at most P checks (+ pytest) at once: run 1's 20 + pytest ran out of memory
    while (( $(jobs -rp | wc -l) > P )); do wait -n; done
    left=$(( deadline - $(date +%s) ))
    if (( left < 8 )); then echo "check shard $i not started: phase 1 out of time"; continue; fi
    timeout "$left" python3 bench/kernels/s17_tcsx.py check --out "$WORK" --shard "$i" >"$WORK/check-$i.log" 2>&1 &
  done
  wait
  echo "== phase 1 (GPU tests + $NSH check shards) $(( $(date +%s) - t0 )) s"
  grep -E "passed|failed|error" "$WORK/tests.log" | tail -n 3
  grep -E "^(FAILED|ERROR)" "$WORK/tests.log" | head -12
  echo "check rows: $(cat "$WORK"/check-*.jsonl 2>/dev/null | wc -l);" \
    "with an error: $(cat "$WORK"/check-*.jsonl | grep -c '"error"')"
  grep -h '"error"' "$WORK"/check-*.jsonl 2>/dev/null | cut -c1-300 | head -4
  t1=$(date +%s)
  timeout "$BENCH_S" python3 bench/kernels/s17_tcsx.py bench --out "$WORK" | cut -c1-400
  echo "== phase 2 (timing) rc ${PIPESTATUS[0]} in $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/s17_tcsx.py report --out "$WORK" --dest "$OUT" --stem "$STEM" --command "$CMD" \
    | sed -n '/^## Shipped pick vs best/,/^## Every timed/p'
  ship="$OUT/$STEM-ship.json"
  if [[ -f "$ship" ]] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$ship'))['bench'] else 1)"; then
    python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" "$OUT/$STEM-new-table.json"
    for size in 7b 13b; do
      left=$(( t0 + TOTAL_S - $(date +%s) ))
      if (( left < 35 )); then echo "== no $size decode: ${left} s left"; continue; fi
      t2=$(date +%s)
      INLAID_QMM_TUNED=1 PYTHONPATH="$DTREE:bench/kernels" timeout "$left" python3 bench/kernels/s16_mid_decode.py \
        --out "$WORK" --tag "$DTAG" \
        --shape "$size" --batches "16,32,64,128" --rounds 8 --tables "old=$WORK/old-table.json,new=$TABLE" \
        2>&1 | grep -v -e UserWarning -e _warn_once
      echo "== [$size] decode rc ${PIPESTATUS[0]} in $(( $(date +%s) - t2 )) s"
      cp "$WORK/$DTAG-$size.json" "$OUT/" 2>/dev/null
    done
  else
    echo "== no ship rows: no table change, no decode comparison"
  fi
  echo "decode tree: $DTREE"
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
mkdir -p "$WORK/out" && cp -r "$OUT"/. "$WORK/out"/ && tar czf "/tmp/$STEM.tgz" -C "$WORK" . \
  && mv "/tmp/$STEM.tgz" "$OUT/" && rm -f "$OUT/$STEM.json"
ls -la "$OUT"
