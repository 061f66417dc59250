#!/usr/bin/env bash
# Session 18 (issue 4): the decode graph's in-graph input (model.decode_graphs GRAPH_INPUT 2) at buckets 8 and 16.
# (1) s18_input_loop.py: the engine's async loop A/B, mode 0 vs mode 2 with the bucket cap lifted, batches 8 and 16,
# 4 rounds, one process; (2) GPU tests (TESTS_S > 0) of the files session 18 touched (mode 3 removed, the cap's
# setting, the neutral allocator check). Outputs in $OUT: log.txt, the loop's JSON per batch, gpu-tests.log.
# Usage (device, repo root): OUT=$OUT [LOOP_S=110] [TESTS_S=75] [LOOP_BATCHES=8,16] [PROF_MODES=''] bash bench/kernels/s18_input.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=${TESTS:-workers/tests/model/test_graph_input.py workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_greedy_kernel.py workers/tests/model/test_decode_graphs.py workers/tests/model/test_graph_staging_gpu.py workers/tests/test_cuda_alloc.py}
{
  device_header
  t0=$(date +%s)
  for f in $TESTS; do [ -e "$f" ] || echo "MISSING test path $f"; done
  if [ "${LOOP_S:-110}" -gt 0 ]; then
    timeout "${LOOP_S:-110}" python3 bench/kernels/s18_input_loop.py --out "$OUT" --batches "${LOOP_BATCHES:-8,16}" \
      --opts "input=0;input=2" --profile-modes "${PROF_MODES:-}" --rounds "${LOOP_ROUNDS:-4}" \
      --tag "${LOOP_TAG:-s18-input-mid}" 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== loop rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
  fi
  t2=$(date +%s)
  if [ "${TESTS_S:-75}" -gt 0 ]; then
    timeout "${TESTS_S:-75}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist load -rs $TESTS >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t2 )) s"
    grep -E "passed|failed|FAILED|ERROR|SKIPPED|Error" "$OUT/gpu-tests.log" | tail -n 25
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/log.txt"
