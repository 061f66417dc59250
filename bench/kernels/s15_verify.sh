#!/usr/bin/env bash
# Session 15's first device call: the GPU tests of session 14's last commits that never ran on a GPU (side_stream,
# the graphs' logits reserve bound, forward_fast's qkv-sums cleanup, the tuner's device context, the tcsat N=416/480
# cases, the cfin mends) plus session 14's whole GPU test list (s14_final.sh). Usage: OUT=... bash bench/kernels/s15_verify.sh
set -o pipefail
OUT=${OUT:-/tmp/s15-verify-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=($(sed -n '/^TESTS=(/,/)$/p' "$(dirname "${BASH_SOURCE[0]}")/s14_final.sh" | tr -d '()' | sed 's/TESTS=//' \
  | grep -o 'workers/[^ ]*\.py'))
TESTS+=("${GPU_ENGINE_TESTS[@]}")
for f in workers/tests/engine/test_sampling_rows_in_place_gpu.py workers/tests/engine/test_graph_reserve_gpu.py \
  workers/tests/model/test_graph_logits.py workers/tests/model/test_graph_logits_gpu.py \
  workers/tests/model/test_prefill_graphs.py workers/tests/kernels/test_consumer_finish_q.py \
  workers/tests/kernels/test_side_stream.py workers/tests/kernels/test_qmm_tuner.py; do
  [ -f "$f" ] && TESTS+=("$f")
done
{
  device_header
  t0=$(date +%s)
  echo "tests: ${#TESTS[@]}"
  timeout "${TESTS_S:-300}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu-tests.log" | tail -n 30
  t1=$(date +%s)
  timeout 60 python3 -m pytest -q -p no:cacheprovider -s workers/tests/engine/test_graph_reserve_gpu.py 2>&1 | tail -n 15
  echo "== reserve -s rc $? in $(( $(date +%s) - t1 )) s"; date -u
} 2>&1 | tee "$OUT/s15-verify-log.txt"
