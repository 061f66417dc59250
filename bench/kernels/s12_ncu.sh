#!/usr/bin/env bash
# Session 12, one device call: Nsight Compute counters of quant_tcs vs the tc2 pick (s12_ncu.py; the
# harness of tma_ncu.sh). Usage on the device: OUT=... bash bench/kernels/s12_ncu.sh
set -o pipefail
OUT=${OUT:-/tmp/s12-ncu-out}
WORK=/tmp/s12-ncu-work
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, device_header
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
{
  device_header
  echo "ncu: $NCU"; "$NCU" --version | tail -n 1
  timeout "${NCU_S:-150}" "$NCU" --profile-from-start off --clock-control none --cache-control all \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats -f -o "$WORK/prof" \
    python3 bench/kernels/s12_ncu.py run 2>&1 | grep -v "^==PROF==" | tail -n 20
  "$NCU" --import "$WORK/prof.ncu-rep" --csv --page details >"$OUT/ncu-details.csv"
  "$NCU" --import "$WORK/prof.ncu-rep" --csv --page raw >"$OUT/ncu-raw.csv"
  python3 bench/kernels/s12_ncu.py summary "$OUT/ncu-details.csv" "$OUT/ncu-raw.csv" | tee "$OUT/ncu-summary.md"
  date -u
} 2>&1 | tee "$OUT/log.txt"
