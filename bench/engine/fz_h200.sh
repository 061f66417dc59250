# Session 7, helper FZ: decode fusions at 7B int4 batch 1-32 with PDL on (the runner's default policy), the
# fusions alternating round by round on one runner (graphs keyed by fusion), shipped tuner picks.
# Call 1 ("fusions"): none, merge, rope, rope-vec (bench/results/decode-2026-11-30-s7-fusions.md).
# Call 2 ("final"): none, swiglu (SwiGLU in the gate/up GEMV), merge, rope+swiglu and auto (the runner's per-bucket
#   default, decode_graphs.FUSION_POLICY; in that run the provisional policy with swiglu at buckets 1-2) alternating
#   (bench/results/decode-2026-11-30-s7-final.md), then the GPU tests
#   of the PDL kernels and of what changed (bench/results/decode-2026-11-30-s7-final-tests.log).
# Usage (device): OUT=... bash bench/engine/fz_h200.sh fusions|final [BENCH_S] [TESTS_S]
set -o pipefail
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers
RUN=${1:-fusions}
BENCH_S=${2:-150}
TESTS_S=${3:-160}
COMMON=(--shapes 7b --quants int4 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0
        --prefill-seqs 0 --cost-points 0 --reps 10 --warmup 2 --fusion-rounds 3)
fusions() {
  timeout $((BENCH_S + 60)) python3 bench/engine/bench_decode.py --out "$OUT" --tag s7-fusions \
    --batches 1,2,4,8,16,32 --fusions none,merge,rope,rope-vec "${COMMON[@]}" --max-seconds "$BENCH_S"
}
final() {
  timeout $((BENCH_S + 40)) python3 bench/engine/bench_decode.py --out "$OUT" --tag s7-final \
    --batches 1,2,4,8,16,32 --fusions none,swiglu,merge,rope+swiglu,auto "${COMMON[@]}" --max-seconds "$BENCH_S" \
    | grep -v '^{'
  echo "== bench: rc $? in $(( $(date +%s) - t )) s"
  local t2=$(date +%s)
  timeout "$TESTS_S" python3 -m pytest -q -p no:cacheprovider --durations=8 -rs \
    workers/tests/kernels/test_pdl.py workers/tests/kernels/test_pdl_lora.py workers/tests/kernels/test_quant_swiglu.py \
    workers/tests/model/test_decode_fusion.py workers/tests/model/test_decode_graphs.py \
    workers/tests/model/test_decode_fusion_policy.py 2>&1 | tail -n 40 | tee "$OUT/s7-final-tests.log"
  echo "== tests: rc $? in $(( $(date +%s) - t2 )) s"
}
{
  device_header
  t=$(date +%s)
  "$RUN"
  echo "== $RUN: rc $? in $(( $(date +%s) - t )) s"
} 2>&1 | tee "$OUT/s7-$RUN.log"
