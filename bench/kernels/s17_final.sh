#!/usr/bin/env bash
# Historical: it ran at a4346b1. Its default INLAID_GRAPH_INPUT mode 3 (and test_graph_greedy_ask.py) were removed in
# session 18, so `git checkout a4346b1` to rerun it as it ran.
# Session 17's closing device call: (1) the GPU tests of what this session changed (tcsx as a tuner kind and its
# operand-order x from the norm / silu_mul, the decode graph's input inside the graph, the bad-input fixes' GPU-free
# paths need none) plus session 16's list, (2) the engine's async loop with the decode graph input modes 2 (shipped)
# and 3 (greedy tokens inside the graph) alternating at batch 1 / 4 (s17_b1_loop.py), (3) the 7B int4 decode grid at
# batch 1-256 with today's defaults (bench_decode.py), (4) the 13B int4 grid if GRID13_S > 0.
# Usage (device, repo root): OUT=... [TESTS_S=150] [LOOP_S=70] [GRID_S=110] [GRID13_S=0] bash bench/kernels/s17_final.sh
set -o pipefail
OUT=${OUT:-/tmp/s17-final-out}
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
  workers/tests/kernels/test_decode_row_merge.py workers/tests/kernels/test_quant_tcs_mid.py \
  workers/tests/engine/test_greedy_kernel.py workers/tests/kernels/test_quant_tcsx.py \
  workers/tests/kernels/test_tcsx_xp.py workers/tests/model/test_graph_input.py \
  workers/tests/engine/test_graph_greedy_ask.py workers/tests/kernels/test_fused_norm.py; do
  [ -f "$f" ] && TESTS+=("$f")
done
{
  device_header
  t0=$(date +%s)
  echo "tests: ${#TESTS[@]}"
  timeout "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs "${TESTS[@]}" \
    -k "not offline" >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"; grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu-tests.log" | tail -n 30
  t2=$(date +%s)
  if [ "${LOOP_S:-70}" -gt 0 ]; then
    timeout "${LOOP_S:-70}" python3 bench/kernels/s17_b1_loop.py --out "$OUT" --batches 1,4 --opts "input=2;input=3" \
      --profile-modes "" --rounds 4 --tag s17-final-loop 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== loop rc $? in $(( $(date +%s) - t2 )) s"
  fi
  t1=$(date +%s)
  timeout "${GRID_S:-110}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s17-grid --shapes 7b --quants int4 \
    --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 32 --lora-batch 32 --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds 95 | grep -E '^\| 7b \| int4|Goals|goal'
  echo "== grid rc $? in $(( $(date +%s) - t1 )) s"
  if [ "${GRID13_S:-0}" -gt 0 ]; then
    t3=$(date +%s)
    timeout "${GRID13_S}" python3 bench/engine/bench_decode.py --out "$OUT" --tag s17-grid-13b --shapes 13b \
      --quants int4 --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 1 --lora-batch 0 \
      --per-batch-lora 0 --prefill-seqs 0 --cost-points 0 --reps 6 --warmup 2 --max-seconds $((GRID13_S - 15)) \
      | grep -E '^\| 13b \| int4'
    echo "== 13b grid rc $? in $(( $(date +%s) - t3 )) s"
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s17-final-log.txt"
