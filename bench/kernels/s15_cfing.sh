#!/usr/bin/env bash
# Session 15 device call for the "+g" decode fusion (the down GEMV reads the gate/up GEMV's split-K sums as its x,
# kernels.consumer_finish.gemv_gu_sums / gu_down_add_norm): s15_cfing.py run 1 (A/B), the GPU tests (TESTS),
# s15_cfing.py run 2 (with a batch-1 kernel profile of PROFILE; RUN2=0: none), then MORE_TESTS with what time is left.
# Alternating round by round on one runner (s14_cfin.py's protocol).
# Usage (device, repo root): OUT=$OUT [TAG=s15-cfing] bash bench/kernels/s15_cfing.sh [ROUNDS] [BATCHES] [FUSIONS]
#   [PAIRS] [PROFILE]
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
ROUNDS=${1:-8} BATCHES=${2:-1,2}
FUSIONS=${3:-none,swiglu+cfin,swiglu+cfin+g,swiglu+cfin+gR}
PAIRS=${4:-swiglu+cfin:swiglu+cfin+g,none:swiglu+cfin+g,swiglu+cfin:swiglu+cfin+gR}
PROFILE=${5:-swiglu+cfin,swiglu+cfin+g}
TAG=${TAG:-s15-cfing}
T=workers/tests
TESTS=${TESTS:-$T/kernels/test_consumer_finish_g.py}
MORE_TESTS=${MORE_TESTS:-$T/kernels/test_consumer_finish.py $T/kernels/test_consumer_finish_q.py $T/model/test_decode_fusion.py $T/model/test_decode_fusion_policy.py}
device_header | tee "$OUT/log.txt"
ab() {  # ab RUN LIMIT_S PROFILE
  echo "== run $1 $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
  timeout "$2" python3 bench/kernels/s15_cfing.py --out "$OUT" --tag "$TAG-run$1" --rounds "$ROUNDS" \
    --batches "$BATCHES" --fusions "$FUSIONS" --pairs "$PAIRS" --profile "$3" 2>&1 \
    | grep -v -e UserWarning -e _warn_once | tee -a "$OUT/log.txt"
}
ab 1 "${LIMIT1:-70}" ""
echo "== tests $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
# shellcheck disable=SC2086
timeout "${LIMIT_T:-60}" python3 -m pytest -q -rfEs $TESTS > "$OUT/tests.txt" 2>&1; tail -8 "$OUT/tests.txt" | tee -a "$OUT/log.txt"
[ "${RUN2:-1}" = 1 ] && ab 2 "${LIMIT2:-70}" "$PROFILE"
echo "== more tests $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
# shellcheck disable=SC2086
timeout "${LIMIT_M:-150}" python3 -m pytest -q -rfEs $MORE_TESTS > "$OUT/more_tests.txt" 2>&1; tail -8 "$OUT/more_tests.txt" | tee -a "$OUT/log.txt"
echo "== end $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
