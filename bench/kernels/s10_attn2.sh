#!/usr/bin/env bash
# Session 10 attention, call 2 (bench/kernels/s10_attn.py): matrix of the one-wave tile configs, the 7B int4 step
# with SKIP_EMPTY and fixed batch-1 tile configs against HEAD (alternating, one runner), GPU tests of the attention.
# OUT=... bash bench/kernels/s10_attn2.sh
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels:bench/engine PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/s10out2}; mkdir -p $OUT
{
device_header
t0=$(date +%s)
timeout ${T_STEP:-50} python3 bench/kernels/s10_attn.py --out $OUT --stages step --rounds ${ROUNDS:-6} \
  --step-plan "1@512:old,skip,c16s,c32s;1@2048:old,c16s;2@512:old,skip;4@512:old,skip"
echo "step done ($(( $(date +%s) - t0 )) s)"
timeout ${T_MATRIX:-20} python3 bench/kernels/s10_attn.py --out $OUT --stages matrix --contexts 512,2048,64 \
  --matrix-variants tiles,tiles-c16,tiles-c16-skip,tiles-c32-skip
echo "matrix done ($(( $(date +%s) - t0 )) s)"
timeout ${T_TEST:-30} python3 -m pytest -q -x workers/tests/kernels/test_decode_kernels.py -k "paged_decode or prefetch" 2>&1 | tail -6
echo "tests done ($(( $(date +%s) - t0 )) s)"
} 2>&1 | tee $OUT/s10-attn2.log
