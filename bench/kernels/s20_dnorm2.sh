#!/usr/bin/env bash
# Session 20, second design (issue 4): the "+dn2" decode fusion against today's policy in the 7B int4 decode step at
# batch 1 (alternating rounds on one runner, s20_dnorm2.py), then the GPU tests of what it touches.
# Usage (device, repo root): OUT=$OUT [LIMIT=150] [TESTS_S=0] [ROUNDS=8] [VARIANTS=base,dn2,qg,ctl] [BATCHES=1]
#   bash bench/kernels/s20_dnorm2.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  date -u
  timeout "${LIMIT:-150}" python3 bench/kernels/s20_dnorm2.py --out "$OUT" --rounds "${ROUNDS:-8}" \
    --variants "${VARIANTS:-base,dn2,qg,ctl}" --batches "${BATCHES:-1}" 2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== bench rc ${PIPESTATUS[0]}"; date -u
  if [ "${TESTS_S:-0}" -gt 0 ]; then
    t0=$(date +%s)
    timeout "${TESTS_S}" python3 -m pytest -v -p no:cacheprovider -n 8 --dist loadfile -rs \
      workers/tests/kernels/test_deferred_norm2.py workers/tests/kernels/test_deferred_norm.py \
      workers/tests/kernels/test_decode_row_rope.py workers/tests/kernels/test_consumer_finish_q.py \
      workers/tests/model/test_decode_fusion.py workers/tests/model/test_decode_fusion_policy.py \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; grep -E "passed|failed|FAILED|ERROR|SKIPPED" "$OUT/gpu-tests.log" | tail -n 30
  fi
  date -u
} 2>&1 | tee "$OUT/log.txt"
