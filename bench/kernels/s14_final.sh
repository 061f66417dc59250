#!/usr/bin/env bash
# Session 14's closing device call (one call, ~330 s): (1) the GPU tests of what this session changed (the cfin
# decode fusion and the consumer-finished split-K sums, the tcsat / tcs2at kinds and the table, the shared graph
# logits buffer, sampling rows read in place, the graphs' logits reserve) plus session 13's list, (2) the 7B int4
# decode grid at batch 1-256 with today's defaults (bench_decode.py, as session 13's grid), (3) the engine decode loop
# sync vs async at batch 1 / 4 (bench/engine/s11_async.py), (4) a second run of the +q A/B at batch 1-2
# (s14_cfinq.py: swiglu+cfin vs swiglu+cfin+q alternating, 8 rounds; the bucket-2 pick rested on one run).
# Usage (device, repo root): OUT=... bash bench/kernels/s14_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s14-final-out}
mkdir -p "$OUT"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=(workers/tests/kernels/test_quant_tcs.py workers/tests/kernels/test_qmm_tuned.py
  workers/tests/kernels/test_non_hopper.py workers/tests/kernels/test_quant_swiglu.py
  workers/tests/kernels/test_gemv_norm.py workers/tests/kernels/test_decode_row_rope.py
  workers/tests/kernels/test_consumer_finish.py workers/tests/kernels/test_quant_hgemvr_finish.py
  workers/tests/model/test_decode_graphs.py workers/tests/model/test_decode_fusion.py
  workers/tests/model/test_decode_fusion_policy.py workers/tests/model/test_graph_staging_gpu.py
  "${GPU_ENGINE_TESTS[@]}" workers/tests/engine/test_device_sampler_scratch.py
  workers/tests/engine/test_async_scheduling_gpu.py workers/tests/engine/test_async_scheduling.py
  workers/tests/engine/test_async_emit_per_step.py workers/tests/engine/test_async_admit.py
  workers/tests/engine/test_device_sampler_memory_gpu.py)
for f in workers/tests/engine/test_sampling_rows_in_place_gpu.py workers/tests/engine/test_graph_reserve_gpu.py \
  workers/tests/model/test_graph_logits.py workers/tests/model/test_graph_logits_gpu.py \
  workers/tests/model/test_prefill_graphs.py workers/tests/kernels/test_consumer_finish_q.py; do
  [ -f "$f" ] && TESTS+=("$f")
done
{
  device_header
  t0=$(date +%s)
  timeout "${TESTS_S:-200}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; tail -n 25 "$OUT/gpu-tests.log"
  t1=$(date +%s)
  timeout "${GRID_S:-120}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s14-grid --shapes 7b --quants int4 \
    --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 32 --lora-batch 32 --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds 100 | grep -E '^\| 7b \| int4|Goals|goal'
  echo "== grid rc $? in $(( $(date +%s) - t1 )) s"
  t2=$(date +%s)
  timeout "${BENCH_S:-80}" python3 bench/engine/s11_async.py --out "$OUT" --batches 1,4 --rounds 2 --steps 100
  echo "== bench rc $? in $(( $(date +%s) - t2 )) s"
  t3=$(date +%s)
  timeout "${CFINQ_S:-45}" python3 bench/kernels/s14_cfinq.py --out "$OUT" --tag s14-cfinq-confirm --rounds 8 \
    --batches 1,2 --fusions none,swiglu+cfin,swiglu+cfin+q --pairs swiglu+cfin:swiglu+cfin+q --profile "" 2>&1 \
    | grep -v -e UserWarning -e _warn_once
  echo "== +q confirm rc $? in $(( $(date +%s) - t3 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s14-final-log.txt"
