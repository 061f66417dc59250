#!/usr/bin/env bash
# Session 15 device call: the critical-path anatomy of the 7B int4 batch-1 decode step (s15_anatomy.py: ablations of
# one kernel class at a time, alternating rounds on one runner, then per-kernel iso times with PDL off).
# The package is imported from .carry-s15 (a `git archive HEAD` snapshot of workers/inlaid_worker and bench/engine,
# carried with the call) when it exists, so other sessions' uncommitted edits do not change the measured step. Make it
# (the path is ignored by .git/info/exclude's /.carry*/; pass carry=[".carry-s15"] to the device call):
#   rm -rf .carry-s15 && mkdir .carry-s15 && git archive HEAD workers/inlaid_worker bench/engine \
#     workers/tests/kernels/pdl_helpers.py | tar -x -C .carry-s15 && cp -r workers/inlaid_worker/gen .carry-s15/workers/inlaid_worker/
# Usage (device, repo root): OUT=$OUT [LIMIT=200] [BUDGET=150] [ROUNDS=8] bash bench/kernels/s15_anatomy.sh [VARIANTS]
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
if [ -d .carry-s15/workers/inlaid_worker ]; then
  export PYTHONPATH=.carry-s15/workers:.carry-s15/bench/engine:bench/kernels
fi
device_header | tee "$OUT/log.txt"
echo "PYTHONPATH=$PYTHONPATH" | tee -a "$OUT/log.txt"
args=(--out "$OUT" --rounds "${ROUNDS:-8}" --budget "${BUDGET:-150}")
[ $# -ge 1 ] && args+=(--variants "$1")
timeout "${LIMIT:-200}" python3 bench/kernels/s15_anatomy.py "${args[@]}" 2>&1 \
  | grep -v -e UserWarning -e _warn_once | tee -a "$OUT/log.txt"
