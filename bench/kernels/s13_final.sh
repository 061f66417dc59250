#!/usr/bin/env bash
# Session 13's closing device call (one call, ~350 s): (1) the GPU tests of what this session changed (quant_tcs's
# release fix and the tcs2a kinds through the dispatcher and the table, the tuner table's picks, decode graphs and
# fusions with the new table, the device sampler's chunking and its memory bound, the engine GPU tests), (2) the
# 13B decode step with the split-2 picks (kernels-2026-11-30-s13-retune-13b-split2-ship.json) against the table without
# them, alternating on one runner, (3) the engine decode loop sync vs async on the 7B int4 random model with the
# session's table (bench/engine/s11_async.py).
# Usage (device, repo root): OUT=... bash bench/kernels/s13_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s13-final-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=(workers/tests/kernels/test_quant_tcs.py workers/tests/kernels/test_qmm_tuned.py
  workers/tests/kernels/test_non_hopper.py workers/tests/kernels/test_quant_swiglu.py
  workers/tests/kernels/test_gemv_norm.py workers/tests/kernels/test_decode_row_rope.py
  workers/tests/model/test_decode_graphs.py workers/tests/model/test_decode_fusion.py
  workers/tests/model/test_decode_fusion_policy.py workers/tests/model/test_graph_staging_gpu.py
  "${GPU_ENGINE_TESTS[@]}" workers/tests/engine/test_device_sampler_scratch.py
  workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_async_scheduling.py
  workers/tests/engine/test_async_emit_per_step.py workers/tests/engine/test_async_admit.py)
for f in workers/tests/engine/test_device_sampler_memory_gpu.py; do [ -f "$f" ] && TESTS+=("$f"); done
{
  device_header
  t0=$(date +%s)
  timeout "${TESTS_S:-170}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 25 "$OUT/gpu-tests.log"
  t1=$(date +%s)  # 13B qkv M = 2..8 at split 2 (the tuner's new split): old vs new table alternating, batches 2/4/8
  cp "$TABLE" /tmp/s13f-old.json
  python3 bench/kernels/tuned_table.py bench/results/kernels-2026-11-30-s13-retune-13b-split2-ship.json --merge \
    && cp "$TABLE" /tmp/s13f-new.json; cp /tmp/s13f-old.json "$TABLE"
  S9_TABLES="old=/tmp/s13f-old.json,new=/tmp/s13f-new.json" PYTHONPATH=workers timeout $(( ${DECODE_S13:-60} + 40 )) \
    python3 bench/kernels/s9_decode.py --out "$OUT" --tag s13-split2-13b --shapes 13b --quants int4 --fusions old,new \
    --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0 \
    --reps 10 --warmup 2 --batches 2,4,8 --fusion-rounds 6 --max-seconds "${DECODE_S13:-60}" \
    | grep -E '^\| 13b \| int4 \| [0-9]'
  echo "== 13B split-2 decode rc $? in $(( $(date +%s) - t1 )) s"
  t2=$(date +%s)
  timeout "${BENCH_S:-70}" python3 bench/engine/s11_async.py --out "$OUT" --batches 1,4 --rounds 2 --steps 100
  echo "== bench rc $? in $(( $(date +%s) - t2 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s13-final-log.txt"
