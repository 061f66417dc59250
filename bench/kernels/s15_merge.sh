#!/usr/bin/env bash
# Session 15 (issue 4): the row attention's merge, decode_row option merge 0 vs 1, in the shipped 7B int4 decode step
# at batch 1 and 2 (alternating rounds on one runner) plus the attention kernel's iso time (s15_merge.py), then the
# GPU tests of the row kernel (decode_row*, the fusion tests) with the working tree's default.
# Usage (device, repo root): OUT=$OUT [LIMIT=80] [TESTS_S=45] [ROUNDS=8] bash bench/kernels/s15_merge.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  timeout "${LIMIT:-80}" python3 bench/kernels/s15_merge.py --out "$OUT" --rounds "${ROUNDS:-8}" 2>&1 \
    | grep -v -e UserWarning -e _warn_once
  echo "== bench rc ${PIPESTATUS[0]}"; date -u
  t0=$(date +%s)
  timeout "${TESTS_S:-45}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs \
    workers/tests/kernels/test_decode_row.py workers/tests/kernels/test_decode_row_rope.py \
    workers/tests/kernels/test_decode_row_merge.py workers/tests/model/test_decode_fusion.py >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; grep -E "passed|failed|FAILED|ERROR|SKIPPED" "$OUT/gpu-tests.log" | tail -n 25
  date -u
} 2>&1 | tee "$OUT/log.txt"
