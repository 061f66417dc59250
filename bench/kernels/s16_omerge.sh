#!/usr/bin/env bash
# [Record: runs only at b4fa76e..9814c79; the +m code was removed in e017bd5.]
# Session 16 (issue 4; built offline, not yet run): the "+m" decode fusion (the o GEMV merges the row attention's
# partials on load) against the shipped step in the 7B int4 decode step at batch 1 ("swiglu+cfin+g" vs "+m", and o
# with block_n 256 / 128) and batch 2 ("swiglu+cfin+q" vs "+m"), alternating rounds on one runner (s16_omerge.py,
# s15_tcsfin.py's protocol), then the GPU tests of the fusion (test_consumer_finish_m.py: kernel cases at the 7B
# shapes run in-process on CUDA) and of the files it touches.
# Usage (device, repo root): OUT=$OUT [LIMIT=240] [TESTS_S=120] [ROUNDS=8] [PLAN=...] [PAIRS=...] bash bench/kernels/s16_omerge.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
args=(--out "$OUT" --rounds "${ROUNDS:-8}" --tag "${TAG:-s16-omerge}")
[ -n "${PLAN:-}" ] && args+=(--plan "$PLAN")
[ -n "${PAIRS:-}" ] && args+=(--pairs "$PAIRS")
{
  device_header
  timeout "${LIMIT:-240}" python3 bench/kernels/s16_omerge.py "${args[@]}" 2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== bench rc ${PIPESTATUS[0]}"; date -u
  t0=$(date +%s)
  timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs \
    workers/tests/kernels/test_consumer_finish_m.py workers/tests/kernels/test_consumer_finish_g.py \
    workers/tests/kernels/test_consumer_finish_q.py workers/tests/kernels/test_decode_row_merge.py \
    workers/tests/kernels/test_decode_row_rope.py >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; grep -E "passed|failed|FAILED|ERROR|SKIPPED" "$OUT/gpu-tests.log" | tail -n 25
  date -u
} 2>&1 | tee "$OUT/log.txt"
