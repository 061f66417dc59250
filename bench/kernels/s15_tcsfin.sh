#!/usr/bin/env bash
# Session 15 (part of the device call s15_h2.sh): "cfin" with the tcs deferral (consumer_finish.TCS_DEFER) against
# today's step at batches 4-16 (bench/kernels/s15_tcsfin.py, s14_cfin.py's protocol), one run.
# Usage (device, repo root): OUT=$OUT [ROUNDS=8] [BATCHES=4,8,16] [FUSIONS=...] [PAIRS=...] bash bench/kernels/s15_tcsfin.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
args=(--out "$OUT" --rounds "${ROUNDS:-8}" --batches "${BATCHES:-4,8,16}" --tag "${TAG:-s15-tcsfin}")
[ -n "${FUSIONS:-}" ] && args+=(--fusions "$FUSIONS")
[ -n "${PAIRS:-}" ] && args+=(--pairs "$PAIRS")
timeout "${LIMIT:-170}" python3 bench/kernels/s15_tcsfin.py "${args[@]}" 2>&1 | grep -v -e UserWarning -e _warn_once \
  | tee -a "$OUT/log.txt"
