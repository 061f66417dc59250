#!/usr/bin/env bash
# Session 15's closing device call: (1) the GPU tests of what this session changed (the tcs deferral and the new
# fusion policy, "+g", the row attention's merge if changed) plus session 14's list (s15_verify.sh's), (2) the engine decode loop first, then the 7B int4
# decode grid at batch 1-256 with today's defaults (bench_decode.py, as sessions 13-14), (3) the engine decode loop
# sync vs async at batch 1 / 4 (bench/engine/s11_async.py), (4) the 13B int4 grid at batch 1-256 (first time with
# the tcsat picks and session 15's policy).
# Usage (device, repo root): OUT=... bash bench/kernels/s15_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s15-final-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
ROUNDS=1 DECODE_S=1 source "$HERE/s9_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=($(sed -n '/^TESTS=(/,/)$/p' "$HERE/s14_final.sh" | grep -o 'workers/[^ ]*\.py'))
TESTS+=("${GPU_ENGINE_TESTS[@]}")
for f in workers/tests/engine/test_sampling_rows_in_place_gpu.py workers/tests/engine/test_graph_reserve_gpu.py \
  workers/tests/model/test_graph_logits.py workers/tests/model/test_graph_logits_gpu.py \
  workers/tests/model/test_prefill_graphs.py workers/tests/kernels/test_consumer_finish_q.py \
  workers/tests/kernels/test_side_stream.py workers/tests/kernels/test_consumer_finish_g.py \
  workers/tests/kernels/test_consumer_finish_tcs.py workers/tests/kernels/test_decode_row.py \
  workers/tests/kernels/test_decode_row_merge.py; do
  [ -f "$f" ] && TESTS+=("$f")
done
{
  device_header
  t0=$(date +%s)
  echo "tests: ${#TESTS[@]}"
  timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu-tests.log" | tail -n 30
  t2=$(date +%s)
  timeout "${BENCH_S:-80}" python3 bench/engine/s11_async.py --out "$OUT" --batches 1,4 --rounds 2 --steps 100
  echo "== engine rc $? in $(( $(date +%s) - t2 )) s"
  t1=$(date +%s)
  timeout "${GRID_S:-120}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s15-grid --shapes 7b --quants int4 \
    --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 32 --lora-batch 32 --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds 100 | grep -E '^\| 7b \| int4|Goals|goal'
  echo "== grid rc $? in $(( $(date +%s) - t1 )) s"
  t3=$(date +%s)
  timeout "${GRID13_S:-70}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s15-grid-13b --shapes 13b \
    --quants int4 --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 1 --lora-batch 0 --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds 55 | grep -E '^\| 13b \| int4'
  echo "== 13b grid rc $? in $(( $(date +%s) - t3 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s15-final-log.txt"
