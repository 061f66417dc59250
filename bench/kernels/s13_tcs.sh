#!/usr/bin/env bash
# Session 13, one device call: quant_tcs's ACC_SCALE kinds (tcsa / tcs2a) against tcs and the shipped picks.
#  (1) the ACC_SCALE GPU tests of test_quant_tcs.py beside s13_tcs.py's checks (8 processes, which also compile)
#  (2) if the tests passed: s13_tcs.py's timing alone, its report (+ -ship.json: best tcsa >= 3% faster than the
#      shipped pick iso and pdl)
#  (3) s13_tcs_stress.py: tcs2's 4.95e-3 with session 12's exact check inputs (S13_STRESS=s12), then the ACC kinds
#  (4) if (2) shipped rows: the 7B decode step, the tree's table (old) vs it merged with the ship rows (new),
#      alternating on one runner (s13_tcs_decode.py = s9_decode.py + s13_tcs_dispatch)
# S13_DIAG_REPS=N first runs s13_tcs_diag.py N (single launches, errors attributed); S13_ACC_STRESS=0 skips the ACC
# stress. Everything ends in $OUT/s13-tcs-all.tgz beside the reports (the device returns a few files a call).
# Usage (device): OUT=... bash bench/kernels/s13_tcs.sh [CHECK_S] [BENCH_S] [STRESS_REPS] [DECODE_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s13-out /tmp/s13-tcs
CHECK_S=${1:-100} BENCH_S=${2:-100} REPS=${3:-16} DECODE_S=${4:-40} STRESS_S=${STRESS_S:-45}
export S12_LAYER=0 S12_CHAINS=0 S12_KIND=${S12_KIND:-tcsa} S12_PLANS=${S12_PLANS:-128:4:tcs,128:4:tcsa,128:4:tcs2a}
export S12_SPLITS=${S12_SPLITS:-3,4,8}
STEM=${S13_STEM:-kernels-2026-11-30-s13-tcs}
T="workers/tests/kernels/test_quant_tcs.py"
{
  device_header
  t0=$(date +%s)
  # S13_TEST_K: pytest -k expressions, one process each (default: the ACC_SCALE kinds' GPU tests)
  IFS='|' read -r -a TK <<< "${S13_TEST_K:-acc_scale and (matches or repeated)}"
  for i in "${!TK[@]}"; do
    timeout "$CHECK_S" python3 -m pytest "$T" -q -p no:cacheprovider -k "${TK[$i]}" >"$OUT/tests-$i.log" 2>&1 &
  done
  check_shards s13_tcs "$CHECK_S" 8
  wait
  echo "phase 1 (tests + checks) $(( $(date +%s) - t0 )) s"; tail -q -n 3 "$OUT"/tests-*.log
  ok=1
  for f in "$OUT"/tests-*.log; do
    if ! grep -qE "[0-9]+ passed" "$f" || grep -qE "[0-9]+ (failed|errors?)\b" "$f"; then ok=0; fi
  done
  echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  cp "$WORK"/check-*.jsonl "$OUT/" 2>/dev/null; cat "$WORK"/check-*.jsonl > "$OUT/$STEM-check.jsonl"; rm -f "$OUT"/check-*.jsonl
  if [[ -n "${S13_DIAG_REPS:-}" ]]; then  # after the checks: their processes compiled most of these kernels
    td=$(date +%s)
    S13_DIAG_CASES=${S13_DIAG_A:-0,3} timeout 60 python3 bench/kernels/s13_tcs_diag.py "$S13_DIAG_REPS" > "$WORK/diag-a.jsonl" 2>"$OUT/diag-a.err" &
    S13_DIAG_CASES=${S13_DIAG_B:-1,2} timeout 60 python3 bench/kernels/s13_tcs_diag.py "$S13_DIAG_REPS" > "$WORK/diag-b.jsonl" 2>"$OUT/diag-b.err" &
    wait
    cat "$WORK"/diag-a.jsonl "$WORK"/diag-b.jsonl > "$OUT/$STEM-diag.jsonl"
    echo "diag in $(( $(date +%s) - td )) s"; cut -c1-300 "$OUT/$STEM-diag.jsonl"; tail -2 "$OUT"/diag-*.err
  fi
  if (( ok )); then
    timing_phase s13_tcs "$BENCH_S"
    python3 bench/kernels/s13_tcs.py report --out "$WORK" --dest "$OUT" --stem "$STEM" \
      --command "OUT=\$OUT bash bench/kernels/s13_tcs.sh $*"
  else
    echo "== GPU tests did not pass: no timing"
  fi
  t2=$(date +%s)
  if [[ "${S13_S12_STRESS:-1}" == 1 ]]; then
    S13_STRESS=s12 timeout "$STRESS_S" python3 bench/kernels/s13_tcs_stress.py "$REPS" > "$OUT/$STEM-stress-s12.jsonl"
    echo "stress s12 rc $? $(( $(date +%s) - t2 )) s"
  fi
  if (( ok )) && [[ "${S13_ACC_STRESS:-1}" == 1 ]]; then
    S13_STRESS=acc timeout "$STRESS_S" python3 bench/kernels/s13_tcs_stress.py $(( REPS / 2 )) > "$OUT/$STEM-stress-acc.jsonl"
    echo "stress acc rc $? $(( $(date +%s) - t2 )) s"
  fi
  ship="$OUT/$STEM-ship.json"
  if (( $(date +%s) - t0 > ${DECODE_AFTER_S:-170} )); then echo "== past ${DECODE_AFTER_S:-170} s: no decode"; ok=0; fi
  if (( ok )) && [[ -f "$ship" ]] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$ship'))['bench'] else 1)"; then
    cp "$TABLE" /tmp/s13-old-table.json
    python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" "$OUT/$STEM-new-table.json"
    t3=$(date +%s)
    DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
         --reps 10 --warmup 2 --batches 4,8,16 --fusion-rounds 8 --max-seconds "$DECODE_S")
    S9_TABLES="old=/tmp/s13-old-table.json,new=$TABLE" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 \
      timeout "${DECODE_TO:-$((DECODE_S + 45))}" python3 bench/kernels/s13_tcs_decode.py --out "$WORK/decode" --tag s13-tcs-tables \
      --shapes 7b --quants int4 --fusions old,new "${DEC[@]}" > "$OUT/decode-2026-11-30-s13-tcs-tables.log" 2>&1
    echo "decode rc $? in $(( $(date +%s) - t3 )) s"
    grep -E '^\| 7b \| int4 \| [0-9]' "$OUT/decode-2026-11-30-s13-tcs-tables.log"
    cp "$WORK"/decode/*.md "$WORK"/decode/*.json "$OUT/" 2>/dev/null
  else
    echo "== no ship rows: no decode comparison"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
tar czf /tmp/s13-tcs-all.tgz -C "$OUT" . && find "$OUT" -type f ! -name "$STEM.md" ! -name "$STEM-ship.json" \
  ! -name "$STEM-log.txt" ! -name "$STEM-diag.jsonl" ! -name "decode-*.md" ! -name "s13-tcs-all.tgz" -delete && mv /tmp/s13-tcs-all.tgz "$OUT/"
