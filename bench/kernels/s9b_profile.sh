#!/usr/bin/env bash
# Session 9b, device call 1: the 7B int4 batch-1 decode step's breakdown (s9b_profile.py: host, profiler under PDL,
# ablation graphs), then the fixed test_triton_backend.py on the GPU host. Usage (device): OUT=... bash bench/kernels/s9b_profile.sh
set -o pipefail
OUT=${OUT:-/tmp/s9b-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
{
  device_header
  t0=$(date +%s)
  timeout 330 python3 bench/kernels/s9b_profile.py --out "$OUT" "$@"
  echo "== profile rc $? in $(( $(date +%s) - t0 )) s"
  t1=$(date +%s)
  timeout 150 python3 -m pytest -q -p no:cacheprovider workers/tests/model/test_triton_backend.py 2>&1 | tail -n 5
  echo "== test_triton_backend rc $? in $(( $(date +%s) - t1 )) s"
} 2>&1 | tee "$OUT/s9b-profile-log.txt"
