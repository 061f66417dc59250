#!/usr/bin/env bash
# Session 12's closing device call (one call, ~250 s): (1) the GPU tests of what this session changed (tcs / tcs2, the
# norm fusion, the decode graphs with swiglu at bucket 1, the row attention's fused rotary, the non-Hopper guards, the
# async pipeline's engine tests, the engine's device path), (2) S12_STRESS=tcs2: every tcs2 config of the unexplained
# 4.95e-3 check, each launch's error recorded, (3) the engine decode loop sync vs async on the 7B int4 random model
# with the session's defaults (bench/engine/s11_async.py).
# Usage (device, repo root): OUT=... bash bench/kernels/s12_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s12-final-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=(workers/tests/kernels/test_quant_tcs.py workers/tests/kernels/test_gemv_norm.py
  workers/tests/kernels/test_non_hopper.py workers/tests/kernels/test_decode_row_rope.py
  workers/tests/kernels/test_quant_swiglu.py workers/tests/model/test_decode_graphs.py
  workers/tests/model/test_decode_fusion.py workers/tests/model/test_decode_fusion_policy.py
  workers/tests/model/test_graph_staging_gpu.py "${GPU_ENGINE_TESTS[@]}"
  workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_async_scheduling.py
  workers/tests/engine/test_async_emit_per_step.py workers/tests/engine/test_async_settle_fault.py
  workers/tests/engine/test_async_loop_fault.py workers/tests/engine/test_async_admit.py)
{
  device_header
  t0=$(date +%s)
  timeout "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 25 "$OUT/gpu-tests.log"
  t1=$(date +%s)
  S12_STRESS=tcs2 timeout "${STRESS_S:-40}" python3 bench/kernels/s12_stress.py 5 | tee "$OUT/tcs2-stress.jsonl"
  echo "== tcs2 stress rc $? in $(( $(date +%s) - t1 )) s"
  t2=$(date +%s)
  timeout "${BENCH_S:-60}" python3 bench/engine/s11_async.py --out "$OUT" --batches 1,4 --rounds 2 --steps 100
  echo "== bench rc $? in $(( $(date +%s) - t2 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s12-final-log.txt"
