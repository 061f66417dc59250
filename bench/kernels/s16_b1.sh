#!/usr/bin/env bash
# Session 16 (issue 4), the 7B int4 batch-1 decode step: (1) s16_b1.py: the row attention's merge with every load
# issued first (s16_b1_merge's kernel, "proto=1") against the shipped merge 1 at batches 1 / 2 / 4, row partition
# sweeps and the "swiglu+cfin+q+g" fusion at batch 1, alternating rounds on one runner, then the attention kernel
# alone; (2) s16_b1_loop.py: the engine's async decode loop at batch 1 with modes alternating (engine.greedy_copy,
# decode_row options), and a profile of its GPU work outside the decode graph; (3) optionally (TESTS_S > 0) GPU tests.
# Usage (device, repo root): OUT=$OUT [B1_S=150] [LOOP_S=120] [TESTS_S=0] [PLAN=...] [PAIRS=...] [ISO=...]
#   [LOOP_OPTS='greedy=0;greedy=1;greedy=2'] [LOOP_BATCHES='1 4'] [TESTS='workers/tests/...py ...'] bash bench/kernels/s16_b1.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
G=swiglu+cfin+g
Q=swiglu+cfin+q
PLAN=${PLAN:-"1=none,$G,$G@proto=1,$G@ctl,$G@parts=16,$G@parts=8,$G@block_n=32/parts=16,swiglu+cfin+q+g;2=none,$Q,$Q@proto=1,$Q@ctl;4=none,cfin,cfin@proto=1"}
PAIRS=${PAIRS:-"$G:$G@proto=1,$G:$G@ctl,$G:$G@parts=16,$G:$G@parts=8,$G:$G@block_n=32/parts=16,$G:swiglu+cfin+q+g,$Q:$Q@proto=1,$Q:$Q@ctl,cfin:cfin@proto=1"}
{
  device_header
  t0=$(date +%s)
  if [ "${B1_S:-150}" -gt 0 ]; then
    timeout "${B1_S:-150}" python3 bench/kernels/s16_b1.py --out "$OUT" --rounds "${ROUNDS:-8}" --plan "$PLAN" \
      --pairs "$PAIRS" --iso "${ISO:-merge=1,proto=1,merge=1/ctl}" --iso-batches 1,2 --tag "${TAG:-s16-b1}" 2>&1 \
      | grep -v -e UserWarning -e _warn_once
    echo "== s16_b1 rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
  fi
  t1=$(date +%s)
  for b in ${LOOP_BATCHES:-1}; do
    [ "${LOOP_S:-120}" -gt 0 ] || break
    t1=$(date +%s)
    timeout "${LOOP_S:-120}" python3 bench/kernels/s16_b1_loop.py --out "$OUT" --batch "$b" \
      --opts "${LOOP_OPTS:-greedy=0;greedy=1;greedy=2}" --rounds "${LOOP_ROUNDS:-4}" --tag "${LOOP_TAG:-s16-b1-loop}-b$b" \
      2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== loop batch $b rc ${PIPESTATUS[0]} in $(( $(date +%s) - t1 )) s"
  done
  if [ "${TESTS_S:-0}" -gt 0 ]; then
    t2=$(date +%s)
    # shellcheck disable=SC2086
    timeout "$TESTS_S" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs \
      ${TESTS:-workers/tests/engine/test_greedy_kernel.py workers/tests/engine/test_async_scheduling_gpu.py} \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t2 )) s"
    grep -E "passed|failed|FAILED|ERROR|SKIPPED" "$OUT/gpu-tests.log" | tail -n 25
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/log.txt"
