#!/usr/bin/env bash
# Session 21 (issue 4): "+dn2" with the shuffled formation ported into main as bucket 1's default. The step A/B
# (s21_dn2_port.py: main's new default against "swiglu+cfin+g" and a control, alternating rounds on one runner; 7B with
# the engine loop, then 13B), then the GPU tests (pytest -v) of what the port touches.
# Usage (device, repo root): OUT=$OUT [LIMIT=120] [TESTS_S=190] [SHAPES=7b,13b] [ROUNDS=8] [LOOP_ROUNDS=4]
#   bash bench/kernels/s21_dn2_port.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  date -u
  if [ "${LIMIT:-120}" -gt 0 ]; then
    timeout "${LIMIT:-120}" python3 bench/kernels/s21_dn2_port.py --out "$OUT" --rounds "${ROUNDS:-8}" \
      --shapes "${SHAPES:-7b,13b}" --loop-rounds "${LOOP_ROUNDS:-4}" 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== bench rc ${PIPESTATUS[0]}"; date -u
  fi
  if [ "${TESTS_S:-190}" -gt 0 ]; then
    t0=$(date +%s)
    timeout "${TESTS_S:-190}" python3 -m pytest -v -p no:cacheprovider -n 8 --dist loadfile -rs \
      workers/tests/kernels/test_deferred_norm2.py workers/tests/kernels/test_dn2_shfl.py \
      workers/tests/model/test_decode_fusion.py workers/tests/model/test_decode_fusion_policy.py \
      workers/tests/kernels/test_decode_row.py workers/tests/kernels/test_decode_row_merge.py \
      workers/tests/kernels/test_decode_row_rope.py workers/tests/kernels/test_consumer_finish_q.py \
      workers/tests/kernels/test_consumer_finish.py::test_decode_graphs_with_cfin_match_unfused \
      workers/tests/kernels/test_consumer_finish_g.py::test_names_and_bad_arguments \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"
    for r in PASSED FAILED SKIPPED ERROR; do echo "$r $(grep -c " $r" "$OUT/gpu-tests.log")"; done
    grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu-tests.log" | tail -n 20
  fi
  date -u
} 2>&1 | tee "$OUT/log.txt"
