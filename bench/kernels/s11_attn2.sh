#!/usr/bin/env bash
# Session 11, follow-up of s11_attn.sh (bench/kernels/s11_attn.py): (1) impl "row" (row16w1-la) against "tiles" at
# batch buckets 4 and 8, 512 and 2048 tokens, in the 7B int4 step; (2) rotary + the new token's K/V write inside
# "row" (row16w1-la-rope: decode_row.row_rope_decode) against rope_cache + "row", per layer under PDL (matrix) and in
# the step at batch 1 and 2 @ 512; then the GPU tests. OUT=... bash bench/kernels/s11_attn2.sh
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels:bench/engine PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/s11out2}; mkdir -p "$OUT"
{
device_header
t0=$(date +%s)
timeout "${T_MATRIX:-35}" python3 bench/kernels/s11_attn.py --out "$OUT" --stages matrix --batches 1,2 \
  --contexts 512,2048 --matrix-variants row16w1-la,row16w1-la-rope
echo "matrix done ($(( $(date +%s) - t0 )) s)"
R="old,row16w1-la,row16w1-la-rope"
timeout "${T_STEP:-110}" python3 bench/kernels/s11_attn.py --out "$OUT" --stages step --rounds "${ROUNDS:-6}" \
  --step-plan "${PLAN:-4@512:old,row16w1-la;4@2048:old,row16w1-la;1@512:$R;2@512:$R;8@512:old,row16w1-la;8@2048:old,row16w1-la}"
echo "step done ($(( $(date +%s) - t0 )) s)"
timeout "${T_TEST:-30}" python3 -m pytest -q workers/tests/kernels/test_decode_row_rope.py \
  workers/tests/kernels/test_decode_row.py -k "rope or real_shapes or pdl_wait" 2>&1 | tail -15
echo "tests done ($(( $(date +%s) - t0 )) s)"
} 2>&1 | tee "$OUT/s11-attn2.log"
