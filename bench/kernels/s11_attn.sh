#!/usr/bin/env bash
# Session 11 decode attention: impl "row" vs the shipped "tiles" (bench/kernels/s11_attn.py), then the GPU tests.
# OUT=... bash bench/kernels/s11_attn.sh   (stages each under a time limit; STAGES_ONLY=step skips the matrix)
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels:bench/engine PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/s11out}; mkdir -p "$OUT"
{
device_header
t0=$(date +%s)
if [ "${STAGES_ONLY:-}" != step ]; then
  timeout "${T_MATRIX:-170}" python3 bench/kernels/s11_attn.py --out "$OUT" --stages matrix
  python3 bench/kernels/s11_attn.py --out "$OUT" --stages pick
  echo "matrix done ($(( $(date +%s) - t0 )) s)"
fi
timeout "${T_STEP:-120}" python3 bench/kernels/s11_attn.py --out "$OUT" --stages step --rounds "${ROUNDS:-6}" \
  --step-plan "${PLAN:-1@512;2@512;4@512;1@2048}" --row2 "${ROW2:-1}"
echo "step done ($(( $(date +%s) - t0 )) s)"
timeout "${T_TEST:-70}" python3 -m pytest -q -x workers/tests/kernels/test_decode_row.py \
  ${EXTRA_TESTS:-} 2>&1 | tail -15
echo "tests done ($(( $(date +%s) - t0 )) s)"
} 2>&1 | tee "$OUT/s11-attn.log"
