# The session's closing H200 call (2026-11-30, session 6): the 7B int4 decode grid with the new defaults (PDL at
# buckets <= 16 with and without LoRA, prefill graphs on up to 1024 tokens, finite random weights), then the GPU
# tests of what landed this session without a GPU run of its own (prefix caching on the triton path, the PDL
# policy's decode graphs, the prefill-graph policy). Shipped tuner picks (INLAID_QMM_TUNED=1).
# Usage (device): OUT=... bash bench/engine/final_h200.sh [BENCH_S] [TESTS_S]
set -o pipefail
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers
BENCH_S=${1:-230}
TESTS_S=${2:-140}
device_header
t=$(date +%s)
timeout $((BENCH_S + 60)) python3 bench/engine/bench_decode.py --out "$OUT" --tag final-s6 --shapes 7b --quants int4 \
  --batches 1,2,4,8,16,32,64,128,256 --ranks 16 --targets qkvo --distinct 8,32 --lora-batch 32 --per-batch-lora 0 \
  --peft 32:8 --peft-reps 1 --prefill-seqs 4 --prefill-graphs 0,1 --cost-points 0 --reps 6 --warmup 2 \
  --max-seconds "$BENCH_S" 2>&1 | tail -n 60 | tee "$OUT/bench.log"
echo "== bench: rc $? in $(( $(date +%s) - t )) s"
t=$(date +%s)
timeout "$TESTS_S" python3 -m pytest -q -p no:cacheprovider --durations=5 \
  workers/tests/engine/test_prefix_cache_gpu.py workers/tests/model/test_prefill_graph_policy.py \
  workers/tests/model/test_prefill_graphs.py workers/tests/kernels/test_pdl.py workers/tests/kernels/test_pdl_lora.py \
  2>&1 | tail -n 40 | tee "$OUT/tests.log"
echo "== tests: rc $? in $(( $(date +%s) - t )) s"
