#!/usr/bin/env bash
# Session 10 (issue 4, host time of the decode step), device call: (1) decode_host.py (single operations' host cost,
# the runner's graph-path stages, the runner's step and an engine decode loop at batch 1, the code before session 10
# and today's alternating on one 7B int4 runner), (2) the GPU tests of the decode graphs and the engine's device
# path. INLAID_QMM_TUNED=1. Usage (device): OUT=... bash bench/engine/decode_host_h200.sh [BENCH_ARGS...]
set -o pipefail
OUT=${OUT:-/tmp/decode-host-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/../kernels/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
GPU_TESTS=(workers/tests/model/test_decode_graphs.py workers/tests/model/test_graph_staging_gpu.py workers/tests/engine/test_device_sampler.py
  workers/tests/model/test_graph_staging.py workers/tests/engine/test_device_logits.py)
{
  device_header
  t0=$(date +%s)
  timeout "${BENCH_S:-240}" python3 bench/engine/decode_host.py --out "$OUT" "$@"
  echo "== bench rc $? in $(( $(date +%s) - t0 )) s"
  t1=$(date +%s)
  timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${GPU_TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t1 )) s"; tail -n 6 "$OUT/gpu-tests.log"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/decode-host-log.txt"
