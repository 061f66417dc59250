#!/usr/bin/env bash
# One device call: the split-K epilogue variants on the GEMV-grid read (bench/kernels/tma_epi.py; helper H2
# 2026-11-30), then the report to $OUT. Usage on the device: bash bench/kernels/tma_epi.sh (OUT set there)
set -o pipefail
OUT=${OUT:-/tmp/epi-out}
WORK=/tmp/epi-work
mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"  # exports, device_header
{
  device_header
  timeout "${BENCH_S:-120}" python3 bench/kernels/tma_epi.py bench --out "$WORK" | tail -n 4
  python3 bench/kernels/tma_epi.py report --out "$WORK" --dest "$OUT" --command "bash bench/kernels/tma_epi.sh"
  date -u
} 2>&1 | tee "$OUT/log.txt"
