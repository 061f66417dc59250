#!/usr/bin/env bash
# Session 9b, device call 2: (1) s9b_parts.py (host stages of the batch-1 step; partition-count sweep of the step at
# batch 1 / 2 / 4 and contexts 512-4096; the 7B int4 decode step at batch 1-16 with HEAD's partition rule and the
# sweep's picks alternating on one runner), (2) the GPU tests (s9_final.sh's list plus test_triton_backend.py),
# INLAID_QMM_TUNED=1. Usage (device): OUT=... bash bench/kernels/s9b_final.sh [END_S]
set -o pipefail
OUT=${OUT:-/tmp/s9b-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
END_S=${1:-400}
source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
GPU_TESTS=("${GPU_MODEL_TESTS[@]}" "$TRITON_BACKEND_TEST" "${GPU_ENGINE_TESTS[@]}")
{
  device_header
  t0=$(date +%s)
  timeout 200 python3 bench/kernels/s9b_parts.py --out "$OUT"
  echo "== parts rc $? in $(( $(date +%s) - t0 )) s"
  left=$(( END_S - ($(date +%s) - t0) - 15 ))
  if (( left > 60 )); then
    echo "== GPU tests, limit $left s"
    PYTHONPATH=workers timeout "$left" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs \
      "${GPU_TESTS[@]}" >"$OUT/s9b-gpu-tests.log" 2>&1
    echo "== GPU tests rc $?"; tail -n 12 "$OUT/s9b-gpu-tests.log"
  else
    echo "== GPU tests skipped: $left s left"
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s9b-final-log.txt"
