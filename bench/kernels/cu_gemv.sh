#!/usr/bin/env bash
# Session 10, one device call: the CUDA C++ int4 GEMM (bench/kernels/cu_gemv.cu) vs the shipped Triton picks.
# (1) cu_gemv.py warm (Triton picks compiled, background) beside cu_gemv.py check (NVRTC compile + correctness),
# (2) cu_gemv.py bench alone (per shape and M iso / pdl, then 32-layer PDL chains), (3) the report into $OUT.
# Usage (device): OUT=... bash bench/kernels/cu_gemv.sh [BENCH_S] [SHAPES] [MS] [STEM]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/cu-out /tmp/cu-gemv
BENCH_S=${1:-240}
SHAPES=${2:-}
MS=${3:-}
STEM=${4:-kernels-2026-11-30-s10-cuda}
{
  device_header
  t0=$(date +%s)
  timeout 150 python3 bench/kernels/cu_gemv.py warm --out "$WORK" ${SHAPES:+--shapes "$SHAPES"} >"$WORK/warm.log" 2>&1 &
  timeout 150 python3 bench/kernels/cu_gemv.py check --out "$WORK" 2>&1 | grep -v '^{' 
  wait
  echo "phase 1 (warm + check) $(( $(date +%s) - t0 )) s"; tail -n 3 "$WORK/warm.log"
  grep -h '"error"' "$WORK/check.json" | head -3
  t1=$(date +%s)
  timeout $((BENCH_S + 120)) python3 bench/kernels/cu_gemv.py bench --out "$WORK" --budget "$BENCH_S" \
    ${SHAPES:+--shapes "$SHAPES"} ${MS:+--ms "$MS"} 2>&1 | cut -c1-400
  echo "phase 2 (bench) $(( $(date +%s) - t1 )) s"
  python3 bench/kernels/cu_gemv.py report --out "$WORK" --dest "$OUT" --command "bash bench/kernels/cu_gemv.sh $*" \
    --stem "$STEM"
  cp "$WORK/check.json" "$OUT/check.json" 2>/dev/null
  if [ -n "${CU_TESTS:-}" ]; then
    echo "== GPU tests (test_cu_gemv.py)"
    timeout 150 python3 -m pytest -q -p no:cacheprovider workers/tests/kernels/test_cu_gemv.py 2>&1 | tail -n 5
  fi
} 2>&1 | tee "$OUT/cu-gemv.log"
