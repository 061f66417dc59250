#!/usr/bin/env bash
# Session 15 (part of the device call s15_h2.sh): HEAD's decode step against session 13's final tree (f92593d), both
# in one process, alternating round by round (bench/kernels/s15_regress.py). The old tree must be prepared on the host
# first (the device has no git) and carried: PREP=1 bash bench/kernels/s15_regress.sh (no GPU) writes .carry_h2_old/.
# Usage (device, repo root): OUT=$OUT [ROUNDS=6] [BATCHES=8,16,32,1] bash bench/kernels/s15_regress.sh
set -u
OLD=${OLD:-f92593d}
if [ "${PREP:-0}" = 1 ]; then
  D=.carry_h2_old
  rm -rf $D && mkdir -p $D/src $D/engine
  git archive "$OLD" workers/inlaid_worker | tar -x -C $D/src && mv $D/src/workers/inlaid_worker $D/inlaid_old && rm -rf $D/src
  grep -rl inlaid_worker $D/inlaid_old | xargs sed -i 's/inlaid_worker/inlaid_old/g'
  for f in random_model steps; do
    git show "$OLD:bench/engine/$f.py" | sed -e 's/inlaid_worker/inlaid_old/g' \
      -e 's/from random_model import/from random_model_old import/; s/from steps import/from steps_old import/' \
      > $D/engine/${f}_old.py
  done
  du -sh $D
  exit 0
fi
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
timeout "${LIMIT:-150}" python3 bench/kernels/s15_regress.py --out "$OUT" --rounds "${ROUNDS:-6}" \
  --batches "${BATCHES:-8,16,32,1}" --profile "${PROFILE:-16,32}" 2>&1 | grep -v -e UserWarning -e _warn_once \
  | tee -a "$OUT/log.txt"
