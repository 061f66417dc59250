#!/usr/bin/env bash
# Session 14 device call for the "+q" decode fusion (the qkv GEMV's split-K sums read by the row attention,
# kernels.consumer_finish.gemv_sums): s14_cfinq.py run 1 (A/B), the GPU tests (TESTS), s14_cfinq.py run 2 (with a
# batch-1 kernel profile of PROFILE; RUN2=0: none), then MORE_TESTS with what time is left. Alternating round by round
# on one runner. (Call 1 of 2026-12-01 ran this with FUSIONS none,swiglu+cfin,swiglu+cfin+q and s14_cfin.py.)
# Usage (device, repo root): OUT=$OUT [TAG=s14-cfinq] bash bench/kernels/s14_cfinq.sh [ROUNDS] [BATCHES] [FUSIONS]
#   [PAIRS] [PROFILE]
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
ROUNDS=${1:-8} BATCHES=${2:-1,2}
FUSIONS=${3:-none,swiglu+cfin,swiglu+cfin+qR,swiglu+cfin+qP}
PAIRS=${4:-swiglu+cfin:swiglu+cfin+qR,swiglu+cfin:swiglu+cfin+qP,swiglu+cfin+qR:swiglu+cfin+qP}
PROFILE=${5:-swiglu+cfin,swiglu+cfin+qR,swiglu+cfin+qP}
TAG=${TAG:-s14-cfinq}
T=workers/tests
TESTS=${TESTS:-$T/kernels/test_consumer_finish_q.py $T/model/test_decode_fusion_policy.py}
MORE_TESTS=${MORE_TESTS:-$T/kernels/test_consumer_finish.py $T/kernels/test_decode_row_rope.py $T/model/test_decode_fusion.py}
device_header | tee "$OUT/log.txt"
ab() {  # ab RUN LIMIT_S PROFILE
  echo "== run $1 $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
  timeout "$2" python3 bench/kernels/s14_cfinq.py --out "$OUT" --tag "$TAG-run$1" --rounds "$ROUNDS" \
    --batches "$BATCHES" --fusions "$FUSIONS" --pairs "$PAIRS" --profile "$3" 2>&1 \
    | grep -v -e UserWarning -e _warn_once | tee -a "$OUT/log.txt"
}
ab 1 "${LIMIT1:-50}" ""
echo "== tests $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
# shellcheck disable=SC2086
timeout "${LIMIT_T:-45}" python3 -m pytest -q $TESTS 2>&1 | tail -8 | tee -a "$OUT/log.txt"
[ "${RUN2:-1}" = 1 ] && ab 2 "${LIMIT2:-35}" "$PROFILE"
echo "== more tests $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
# shellcheck disable=SC2086
timeout "${LIMIT_M:-200}" python3 -m pytest -q -x $MORE_TESTS 2>&1 | tail -8 | tee -a "$OUT/log.txt"
echo "== end $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
