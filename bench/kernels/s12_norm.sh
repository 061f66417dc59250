#!/usr/bin/env bash
# Session 12 device call: the norm-fusion GPU tests, then s12_norm.py (7B int4 step, fused vs unfused alternating).
# Usage (device): OUT=$OUT bash bench/kernels/s12_norm.sh [ROUNDS] [BATCHES] [FUSIONS] [PROFILE]
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
device_header | tee "$OUT/log.txt"
timeout 200 python3 -m pytest -q workers/tests/kernels/test_gemv_norm.py workers/tests/kernels/test_quant_swiglu.py \
  workers/tests/kernels/test_quant_hgemvr_finish.py "workers/tests/model/test_decode_fusion.py::test_graph_fusions_match_reference" \
  2>&1 | tail -15 | tee -a "$OUT/log.txt"
timeout 300 python3 bench/kernels/s12_norm.py --out "$OUT" --rounds "${1:-8}" --batches "${2:-1,2,4}" \
  --fusions "${3:-none,norm,norm16,swiglu,norm16+swiglu}" --profile "${4:-}" 2>&1 | grep -v "^regs" | tee -a "$OUT/log.txt"
