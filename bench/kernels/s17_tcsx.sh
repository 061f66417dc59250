#!/usr/bin/env bash
# Session 17 (issue 4), ONE device call (<= 300 s): the first run of quant_tcsx (bench-only kinds tcsx / tcsx2, x
# streamed through the word ring; built and checked offline only before this call):
#  (1) test_quant_tcsx.py's GPU tests (small shapes: block_m 16-128, splits 1-4, sym / act-order / bf16, PDL; 7B
#      gate/up M = 64 with 12 launches a candidate) beside s17_tcsx.py's checks (P (10) at a time since run 2; run 1
#      started all 20 with pytest and ran out of GPU memory; processes: one per compiled tcsx
#      variant, one per M and model for the shipped picks; every candidate at the 7B / 13B shapes, M = 64 / 32 / 128 / 16, PDL off and on,
#      S17_STRESS single launches against tcs_reference(acc_scale=True))
#  (2) the timing (iso / PDL, the shipped pick, bf16 cuBLAS, every passing tcsx candidate with its pre-pass, the best
#      again with x permuted once, the pre-pass alone), whatever (1) found: failing candidates are only left out
#  (3) the report (markdown + JSON), then everything (logs, check rows, bench.json) tar'd into one file
# Usage (device): OUT=... bash bench/kernels/s17_tcsx.sh [CHECK_S] [BENCH_S]
#   run tool: command "bash bench/kernels/s17_tcsx.sh", timeout_s 300 (phases 100 + 140 s, the rest ~20-35 s)
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
OUT=${OUT:-/tmp/s17-out}
WORK=/tmp/s17-tcsx
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
CHECK_S=${1:-100} BENCH_S=${2:-140}
STEM=${S17_STEM:-kernels-$(date -u +%F)-s17-tcsx}
CMD="OUT=\$OUT bash bench/kernels/s17_tcsx.sh $*"
{
  device_header
  t0=$(date +%s)
  timeout "$CHECK_S" python3 -m pytest workers/tests/kernels/test_quant_tcsx.py -q -p no:cacheprovider \
    -k "matches_reference or many_launches" >"$WORK/tests.log" 2>&1 &
  NSH=$(python3 -c "import s17_tcsx; print(len(s17_tcsx.SHARDS))") || NSH=20
  deadline=$(( t0 + CHECK_S ))
  for i in $(seq 0 $((NSH - 1))); do  # at most P checks (+ pytest) at once: 20 + pytest ran out of GPU memory (run 1)
    while (( $(jobs -rp | wc -l) > ${P:-10} )); do wait -n; done
    left=$(( deadline - $(date +%s) ))
    if (( left < 8 )); then echo "check shard $i not started: phase 1 out of time"; continue; fi
    timeout "$left" python3 bench/kernels/s17_tcsx.py check --out "$WORK" --shard "$i" >"$WORK/check-$i.log" 2>&1 &
  done
  wait
  echo "phase 1 (GPU tests + checks) $(( $(date +%s) - t0 )) s"
  tail -n 4 "$WORK/tests.log"
  grep -E "FAILED|Error" "$WORK/tests.log" | head -12
  echo "check rows: $(cat "$WORK"/check-*.jsonl 2>/dev/null | wc -l)"
  grep -h '"error"' "$WORK"/check-*.jsonl 2>/dev/null | cut -c1-400 | head -6
  for i in $(seq 0 $((NSH - 1))); do tail -n 2 "$WORK/check-$i.log" | cut -c1-300; done
  t1=$(date +%s)
  timeout "$BENCH_S" python3 bench/kernels/s17_tcsx.py bench --out "$WORK"
  echo "phase 2 (timing) rc $? in $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/s17_tcsx.py report --out "$WORK" --dest "$OUT" --stem "$STEM" --command "$CMD"
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
# one archive with everything (the device returns only a few files); the markdown and the log stay beside it
mkdir -p "$WORK/out" && cp -r "$OUT"/. "$WORK/out"/ && tar czf "$OUT/$STEM.tgz" -C "$WORK" . && rm -f "$OUT/$STEM.json"
ls -la "$OUT"
