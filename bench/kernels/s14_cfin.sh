#!/usr/bin/env bash
# Session 14 device call: the consumer-finish GPU tests (TESTS), then s14_cfin.py twice (run 1 with a batch-1 kernel
# profile of PROFILE, run 2 to confirm): the 7B int4 step, the "cfin" fusions against today's, alternating round by
# round on one runner.
# Usage (device, repo root): OUT=$OUT [TAG=s14-cfin] [TESTS="..."] bash bench/kernels/s14_cfin.sh [ROUNDS] [BATCHES]
#   [FUSIONS] [PAIRS] [PROFILE]
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
ROUNDS=${1:-8} BATCHES=${2:-1,2}
FUSIONS=${3:-none,swiglu,swiglu+cfin,swiglu+cfinX,cfin}
PAIRS=${4:-swiglu:swiglu+cfin,none:swiglu+cfin,swiglu:swiglu+cfinX,none:cfin}
PROFILE=${5:-swiglu,swiglu+cfin}
TAG=${TAG:-s14-cfin}
TESTS=${TESTS:-workers/tests/kernels/test_consumer_finish.py workers/tests/kernels/test_quant_hgemvr_finish.py}
device_header | tee "$OUT/log.txt"
# shellcheck disable=SC2086
timeout 220 python3 -m pytest -q $TESTS 2>&1 | tail -8 | tee -a "$OUT/log.txt"
for run in 1 2; do
  prof=""
  [ "$run" = 1 ] && prof=$PROFILE
  echo "== run $run $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
  timeout $((run == 1 ? 170 : 150)) python3 bench/kernels/s14_cfin.py --out "$OUT" --tag "$TAG-run$run" \
    --rounds "$ROUNDS" --batches "$BATCHES" --fusions "$FUSIONS" --pairs "$PAIRS" --profile "$prof" 2>&1 \
    | grep -v -e UserWarning -e _warn_once | tee -a "$OUT/log.txt"
done
