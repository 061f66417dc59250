#!/usr/bin/env bash
# Session 14 (issue 4 levers a / b / c), one device call: quant_tcs's scale / zero staging (tcs2ao: staged after the x
# loads; tcs2at / tcsat: the producer TMA-copies the scale and zero rows), deeper rings (tcs2a st 6 / 8) and tcsa,
# against tcs2a st4 (the shipped picks) with session 12/13's harness (s13_tcs.py over s12_tcs.py / s8_gemv.py).
#  (1) session 14's GPU tests (test_quant_tcs.py -k sz_modes_match) beside s13_tcs.py's checks (8 processes)
#  (2) if the tests passed: the timing alone, its report (+ -ship.json: best tcs* candidate >= 3% faster than the
#      shipped pick iso and pdl)
#  (3) if (2) shipped rows (and the call is young enough): the 7B decode step, the tree's table (old) vs it merged with
#      the ship rows (new), alternating round by round on one runner (s13_tcs_decode.py = s9_decode.py)
# S14_STRESS_S=N (seconds) adds s13_tcs_stress.py's acc mode over S14_STRESS_KINDS (default tcsat,tcs2at) after the
# timing. Ran twice on 2026-12-01 (commands in bench/results/kernels-2026-12-01-s14-tcs-summary.md): run 1 the defaults,
# run 2 the four 4-stage kinds on five 7B shapes with the stress; the tuner now offers tcs2a and tcsat only.
# Usage (device): OUT=... bash bench/kernels/s14_tcs.sh [CHECK_S] [BENCH_S] [DECODE_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s14-out /tmp/s14-tcs
CHECK_S=${1:-150} BENCH_S=${2:-120} DECODE_S=${3:-80}
export S12_LAYER=0 S12_CHAINS=0 S12_KIND=${S12_KIND:-}
export S12_PLANS=${S12_PLANS:-128:4:tcs2a,128:6:tcs2a,128:8:tcs2a,128:4:tcs2ao,128:4:tcs2at,128:8:tcs2at,128:4:tcsa,128:4:tcsat,128:8:tcsat}
export S12_SPLITS=${S12_SPLITS:-3,8} S13_MS=${S13_MS:-2,4,8,16}
STEM=${S14_STEM:-kernels-2026-12-01-s14-tcs}
T="workers/tests/kernels/test_quant_tcs.py"
{
  device_header
  t0=$(date +%s)
  timeout "$CHECK_S" python3 -m pytest "$T" -q -p no:cacheprovider -k "${S14_TEST_K:-sz_modes_match}" >"$OUT/tests.log" 2>&1 &
  check_shards s13_tcs "$CHECK_S" 8
  wait
  echo "phase 1 (tests + checks) $(( $(date +%s) - t0 )) s"; tail -n 3 "$OUT/tests.log"
  ok=1
  if ! grep -qE "[0-9]+ passed" "$OUT/tests.log" || grep -qE "[0-9]+ (failed|errors?)\b" "$OUT/tests.log"; then ok=0; fi
  echo "checked candidates: $(cat "$WORK"/check-*.jsonl | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl | head -5
  cat "$WORK"/check-*.jsonl > "$OUT/$STEM-check.jsonl"
  if (( ok )); then
    timing_phase s13_tcs "$BENCH_S"
    python3 bench/kernels/s13_tcs.py report --out "$WORK" --dest "$OUT" --stem "$STEM" \
      --command "OUT=\$OUT bash bench/kernels/s14_tcs.sh $*"
  else
    echo "== GPU tests did not pass: no timing"; grep -E "FAILED|Error" "$OUT/tests.log" | head -20
  fi
  if (( ok )) && [[ "${S14_STRESS_S:-0}" != 0 ]]; then  # repeated checked launch pairs of the new kinds (s13_tcs_stress.py)
    t2=$(date +%s)
    S13_STRESS=acc S13_ACC_KINDS=${S14_STRESS_KINDS:-tcsat,tcs2at} timeout "$S14_STRESS_S" \
      python3 bench/kernels/s13_tcs_stress.py "${S14_STRESS_REPS:-8}" > "$OUT/$STEM-stress.jsonl"
    echo "stress rc $? $(( $(date +%s) - t2 )) s: $(wc -l < "$OUT/$STEM-stress.jsonl") configs"; cut -c1-240 "$OUT/$STEM-stress.jsonl" | head -4
  fi
  ship="$OUT/$STEM-ship.json"
  if (( $(date +%s) - t0 > ${DECODE_AFTER_S:-200} )); then echo "== past ${DECODE_AFTER_S:-200} s: no decode"; ok=0; fi
  if (( ok )) && [[ -f "$ship" ]] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$ship'))['bench'] else 1)"; then
    cp "$TABLE" /tmp/s14-old-table.json
    python3 bench/kernels/tuned_table.py "$ship" --merge && cp "$TABLE" "$OUT/$STEM-new-table.json"
    t3=$(date +%s)
    DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
         --reps 10 --warmup 2 --batches "${S14_BATCHES:-2,4,8,16}" --fusion-rounds "${S14_ROUNDS:-6}" --max-seconds "$DECODE_S")
    S9_TABLES="old=/tmp/s14-old-table.json,new=$TABLE" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 \
      timeout $((DECODE_S + 45)) python3 bench/kernels/s13_tcs_decode.py --out "$WORK/decode" --tag "${S14_DECODE_TAG:-s14-tcs-tables}" \
      --shapes 7b --quants int4 --fusions old,new "${DEC[@]}" > "$OUT/decode-2026-12-01-${S14_DECODE_TAG:-s14-tcs-tables}.log" 2>&1
    echo "decode rc $? in $(( $(date +%s) - t3 )) s"
    grep -E '^\| 7b \| int4 \| [0-9]' "$OUT/decode-2026-12-01-${S14_DECODE_TAG:-s14-tcs-tables}.log"
    cp "$WORK"/decode/*.md "$WORK"/decode/*.json "$OUT/" 2>/dev/null
  else
    echo "== no ship rows (or no time): no decode comparison"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
