#!/usr/bin/env bash
# Session 13 (helper H1) device call: the L2-prefetch GPU tests, then s13_l2pf.py (chains + the 7B int4 decode step
# with prefetch variants alternating on one runner). Usage (device): OUT=$OUT bash bench/kernels/s13_l2pf.sh [ARGS...]
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
device_header | tee "$OUT/log.txt"
if [ "${S13_TESTS:-1}" = 1 ]; then
  timeout "${S13_TEST_S:-150}" python3 -m pytest -q -x workers/tests/kernels/test_l2_prefetch.py 2>&1 | tail -8 | tee -a "$OUT/log.txt"
fi
timeout "${S13_BENCH_S:-240}" python3 bench/kernels/s13_l2pf.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
echo "rc ${PIPESTATUS[0]}" | tee -a "$OUT/log.txt"
date -u | tee -a "$OUT/log.txt"
