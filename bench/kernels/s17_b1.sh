#!/usr/bin/env bash
# Historical: it ran at a4346b1. Its default INLAID_GRAPH_INPUT mode 3 (and test_graph_greedy_ask.py) were removed in
# session 18, so `git checkout a4346b1` to rerun it as it ran.
# Session 17 (issue 4): the decode step's input and greedy tokens inside the decode CUDA graph (model.decode_graphs
# GRAPH_INPUT 0-3). (1) s17_b1_loop.py: the engine's async loop A/B at LOOP_BATCHES, modes alternating, and a
# profile of the GPU work between two replays; (2) GPU tests (TESTS_S > 0): the async engine equals the synchronous one
# in every mode, the greedy kernels, the decode graphs and their staging race.
# Usage (device, repo root): OUT=$OUT [TESTS_S=80] [LOOP_S=170] [LOOP_BATCHES=1,4] [LOOP_OPTS='input=0;...'] bash bench/kernels/s17_b1.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  t0=$(date +%s)
  t1=$(date +%s)
  if [ "${LOOP_S:-170}" -gt 0 ]; then
    timeout "${LOOP_S:-170}" python3 bench/kernels/s17_b1_loop.py --out "$OUT" --batches "${LOOP_BATCHES:-1,4}" \
      --opts "${LOOP_OPTS:-input=0;input=1;input=2;input=3}" --profile-modes "${PROF_MODES:-input=0;input=3}" \
      --rounds "${LOOP_ROUNDS:-4}" --tag "${LOOP_TAG:-s17-b1-loop}" 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== loop rc ${PIPESTATUS[0]} in $(( $(date +%s) - t1 )) s"
  fi
  t2=$(date +%s)
  if [ "${TESTS_S:-80}" -gt 0 ]; then
    timeout "${TESTS_S:-80}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist load -rs \
      ${TESTS:-workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_greedy_kernel.py workers/tests/model/test_decode_graphs.py workers/tests/model/test_graph_staging_gpu.py workers/tests/model/test_graph_input.py} \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t2 )) s"
    grep -E "passed|failed|FAILED|ERROR|SKIPPED|Error" "$OUT/gpu-tests.log" | tail -n 25
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/log.txt"
