#!/usr/bin/env bash
# Session 15, helper H2's confirmation calls (runs 2 and 3 of s15_tcsfin.py) with per-batch plans: bucket 2's policy
# ("swiglu+cfin+q") with and without the tcs deferral, batch 4 against "none", batches 8 / 16 with the "merge"
# attention ("merge+cfin": a name the decode graphs accept for this run only, --extra-names); then (TESTS=1) the
# existing consumer-finish GPU tests' 7B and forward cases. Run 3 used PLAN without batch 4.
# Usage (device, repo root): OUT=$OUT [TAG=s15-tcsfin-run2] [PLAN=...] [PROFILE=8=none,swiglu+cfinT] [TESTS=1]
#   bash bench/kernels/s15_h2_call2.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
PLAN=${PLAN:-"2=none,swiglu+cfin+q,swiglu+cfinT+q;4=none,swiglu+cfinT;8=none,merge,swiglu+cfinT,merge+cfinT;16=none,merge,swiglu+cfinT,merge+cfinT"}
prof=()
[ -n "${PROFILE:-}" ] && prof=(--profile "$PROFILE")
device_header | tee "$OUT/log.txt"
timeout "${LIMIT:-120}" python3 bench/kernels/s15_tcsfin.py --out "$OUT" --tag "${TAG:-s15-tcsfin-run2}" --rounds 8 \
  --plan "$PLAN" \
  --pairs "swiglu+cfin+q:swiglu+cfinT+q,none:swiglu+cfinT,merge:merge+cfinT,none:merge+cfinT,merge:swiglu+cfinT" \
  "${prof[@]}" --extra-names merge+cfin 2>&1 | grep -v -e UserWarning -e _warn_once | tee -a "$OUT/log.txt"
if [ "${TESTS:-1}" = 1 ]; then
  echo "== tests $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
  timeout "${TEST_LIMIT:-60}" python3 -m pytest -q workers/tests/kernels/test_consumer_finish.py -k "7b or forward" 2>&1 \
    | tail -6 | tee -a "$OUT/log.txt"
fi
echo "== done $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
