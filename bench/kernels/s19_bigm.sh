#!/usr/bin/env bash
# Session 19, helper H2 (issue 4, large batches), ONE device call (run tool: timeout_s <= 330): quant_tcsx's time at
# M = 128 / 256 split by ablations and Nsight Compute, and the stream-K grid "tcsxk" (quant_tcsxk) against the shipped
# picks and bf16 cuBLAS (s19_bigm.py):
#  (1) check: tcsxk / tcsxks (one process each), two warm-up processes (shipped picks, ablation kernels) and the GPU
#      tests, at once
#  (2) bench alone (iso / PDL, pre-pass included; ablations on x permuted once), then the report and its ship rows
#  (3) ncu on the three brief points (bf16 cuBLAS, the shipped kernel, tcsxk), while time is left (NCU_S=0: none)
#  (4) everything in one archive (the device returns only a few files)
# Usage on the device (repo root): OUT=... bash bench/kernels/s19_bigm.sh
set -o pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/s19-bigm-out}
WORK=/tmp/s19-bigm
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
CHECK_S=${CHECK_S:-75} BENCH_S=${BENCH_S:-100} NCU_S=${NCU_S:-55}
DAY=$(date -u +%F)
STEM=kernels-$DAY-s19-bigm${S19_TAG:-}
CMD="OUT=\$OUT NCU_S=$NCU_S bash bench/kernels/s19_bigm.sh"
{
  device_header
  t0=$(date +%s)
  for i in 0 1 2 3; do
    timeout "$CHECK_S" python3 bench/kernels/s19_bigm.py check --out "$WORK" --shard "$i" >"$WORK/check-$i.log" 2>&1 &
  done
  timeout "$CHECK_S" python3 -m pytest -q -v -p no:cacheprovider -n 2 -rs workers/tests/kernels/test_quant_tcsxk.py \
    >"$WORK/tests.log" 2>&1 &
  wait
  grep -e PASSED -e FAILED -e ERROR -e "passed\|failed" "$WORK/tests.log" | cut -c1-200 | tail -n 25
  echo "== phase 1 (check) $(( $(date +%s) - t0 )) s; rows $(cat "$WORK"/check-*.jsonl 2>/dev/null | wc -l)"
  for i in 0 1 2 3; do grep -v -e UserWarning -e warn_once "$WORK/check-$i.log" | tail -n 30 | cut -c1-220; done
  t1=$(date +%s)
  timeout "$BENCH_S" python3 bench/kernels/s19_bigm.py bench --out "$WORK" 2>&1 | cut -c1-900
  echo "== phase 2 (timing) in $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/s19_bigm.py report --out "$WORK" --dest "$OUT" --stem "$STEM" --command "$CMD"
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
  echo "ncu: ${NCU:-none}"
  if [[ -n "$NCU" && "$NCU_S" != 0 ]]; then
    t2=$(date +%s)
    timeout "$NCU_S" "$NCU" --profile-from-start off --clock-control none --cache-control all \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
      --section LaunchStats --section Occupancy --section MemoryWorkloadAnalysis -f -o "$WORK/prof" \
      python3 bench/kernels/s19_bigm.py ncu-run 2>&1 | grep -v "^==PROF==" | tail -n 14
    "$NCU" --import "$WORK/prof.ncu-rep" --csv --page raw >"$WORK/ncu-raw.csv" 2>/dev/null
    "$NCU" --import "$WORK/prof.ncu-rep" --csv --page details >"$WORK/ncu-details.csv" 2>/dev/null
    python3 bench/kernels/s19_bigm.py ncu-summary "$WORK/ncu-raw.csv" >"$OUT/$STEM-ncu.txt" 2>&1
    head -c 6000 "$OUT/$STEM-ncu.txt"
    echo "== phase 3 (ncu) in $(( $(date +%s) - t2 )) s"
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$STEM-log.txt"
mkdir -p "$WORK/out" && cp -r "$OUT"/. "$WORK/out"/ && rm -f "$WORK/prof.ncu-rep" \
  && tar czf "/tmp/$STEM.tgz" -C "$WORK" . && mv "/tmp/$STEM.tgz" "$OUT/"
ls -la "$OUT"
