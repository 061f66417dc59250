#!/usr/bin/env bash
# Session 16's closing device call: (1) the GPU tests of what this session changed (quant_tcs at block_m 32 / 64 and
# the new tuner picks, the greedy kernel in the async loop, the +m removal's files) plus session 15's list, (2) the
# engine decode loop at batch 1 / 4 (bench/engine/s11_async.py; the greedy kernel is the default now), (3) the 7B int4
# decode grid at batch 1-256 with today's defaults (bench_decode.py), (4) the 13B int4 grid if time is left.
# Usage (device, repo root): OUT=... [TESTS_S=150] [BENCH_S=80] [GRID_S=120] [GRID13_S=70] bash bench/kernels/s16_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s16-final-out}
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
  workers/tests/kernels/test_decode_row_merge.py \
  workers/tests/kernels/test_quant_tcs_mid.py workers/tests/engine/test_greedy_kernel.py; do
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
  timeout "${GRID_S:-120}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s16-grid --shapes 7b --quants int4 \
    --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 32 --lora-batch 32 --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds 100 | grep -E '^\| 7b \| int4|Goals|goal'
  echo "== grid rc $? in $(( $(date +%s) - t1 )) s"
  t3=$(date +%s)
  timeout "${GRID13_S:-70}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s16-grid-13b --shapes 13b \
    --quants int4 --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 1 --lora-batch 0 --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds 55 | grep -E '^\| 13b \| int4'
  echo "== 13b grid rc $? in $(( $(date +%s) - t3 )) s"
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s16-final-log.txt"
