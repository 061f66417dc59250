#!/usr/bin/env bash
# Session 19's closing device call: (1) the GPU tests of the worker's kernels, model and GPU engine files (session 19
# refactored many GPU-only kernel tests into shared helpers, added the tcsxk kinds and turned the grouped-LoRA rule
# on); -v, so a run cut by its limit still names each outcome; (2) the 13B int4 decode step at batch 256 with the
# tuned table before session 19's two tcsxk picks against today's, alternating round by round on one runner
# (s17_m256_decode.py, 256 cached tokens a sequence), if OLD_TABLE exists.
# Usage (device, repo root; carry .carry-s19 holding the old table):
#   OUT=... [TESTS_S=240] [AB_S=90] OLD_TABLE=.carry-s19/h200-pre-s19.json bash bench/kernels/s19_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s19-final-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$HERE/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=(workers/tests/kernels workers/tests/model "${GPU_ENGINE_TESTS[@]}")
for f in workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_sampling_rows_in_place_gpu.py \
  workers/tests/engine/test_graph_reserve_gpu.py workers/tests/engine/test_greedy_kernel.py \
  workers/tests/engine/test_device_sampler_scratch.py workers/tests/engine/test_device_sampler_memory_gpu.py; do
  if [ -e "$f" ]; then TESTS+=("$f"); else echo "MISSING $f"; fi
done
{
  device_header
  t0=$(date +%s)
  echo "test paths: ${#TESTS[@]}"
  timeout "${TESTS_S:-240}" python3 -m pytest -v -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    -k "not offline" >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"
  grep -cE " PASSED" "$OUT/gpu-tests.log" | sed 's/^/passed: /'
  grep -E " FAILED| ERROR|^(FAILED|ERROR) |[0-9]+ (passed|failed)" "$OUT/gpu-tests.log" | tail -n 30
  if [ -f "${OLD_TABLE:-}" ] && [ "${AB_S:-90}" -gt 0 ]; then
    t1=$(date +%s)
    S17_CONTEXT=256 timeout "${AB_S:-90}" python3 bench/kernels/s17_m256_decode.py --out "$OUT" \
      --tables "old=$OLD_TABLE,new=workers/inlaid_worker/kernels/tuned/nvidia-h200.json" --shape 13b --batches 256 \
      --tag decode-2026-12-01-s19-tcsxk 2>&1 | grep -v -e UserWarning -e _warn_once | tail -n 25
    echo "== decode A/B rc $? in $(( $(date +%s) - t1 )) s"
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s19-final-log.txt"
