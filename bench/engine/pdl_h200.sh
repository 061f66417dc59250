# Device calls for Programmatic Dependent Launch (kernels.pdl), H200, 2026-11-30. Call 1 ("run1"):
#   1. bench/engine/pdl_check.py: does PDL survive torch CUDA-graph capture (a 256-kernel chain, plain / PDL with
#      wait / PDL without wait as a negative control)?
#   2. bench_decode.py, 7B int4, batches 1-32, PDL modes 0,1,2 alternating per point (+ batch-1 profiles per mode)
#   3. workers/tests/kernels/test_pdl.py on the GPU (graph chains of split-K GEMVs; decode graphs of a 2-layer 7B)
#   4. bench_decode.py, 13B int4, batch 1, PDL modes 0,1
# Call 2 ("run2"), after decode_graphs' PDL policy (buckets <= 2, no LoRA) and the no-prefetch ablation (mode 3):
#   1. test_pdl.py, and the decode-graph / decode-fusion GPU tests with INLAID_PDL=1
#   2. bench_decode.py, 7B int4, batches 1,2,4,8 and rank-16 q/k/v/o LoRA at batch 1 (INLAID_PDL_LORA=1: forced
#      on there), PDL modes 0,1,3
#   3. bench_decode.py, 13B int4, batches 1,2, PDL modes 0,1
# Shipped tuner picks (INLAID_QMM_TUNED=1). Every step has a time limit inside BUDGET seconds in all.
# Usage (device): OUT=... bash bench/engine/pdl_h200.sh run1|run2 [BUDGET]
set -o pipefail
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1
RUN=${1:-run1}
BUDGET=${2:-400}
T0=$(date +%s)
W=/tmp/pdlwork
mkdir -p "$W"
source bench/engine/budget_steps.sh  # left, step
run1() {
  device_header
  step check 60 python3 bench/engine/pdl_check.py --out "$W"
  step bench7b 220 python3 bench/engine/bench_decode.py --out "$W" --tag pdl --shapes 7b --quants int4 \
    --batches 1,2,4,8,16,32 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --pdl 0,1,2 --pdl-rounds 3 --reps 10 --warmup 2 --profile --max-seconds 170
  step tests 120 python3 -m pytest -q -x -p no:cacheprovider workers/tests/kernels/test_pdl.py
  step bench13b 90 python3 bench/engine/bench_decode.py --out "$W" --tag pdl-13b --shapes 13b --quants int4 \
    --batches 1 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 \
    --cost-points 0 --pdl 0,1 --pdl-rounds 3 --reps 10 --warmup 2 --max-seconds 60
}
run2() {
  device_header
  step tests 120 python3 -m pytest -q -p no:cacheprovider workers/tests/kernels/test_pdl.py
  INLAID_PDL=1 step model-tests 60 python3 -m pytest -q -p no:cacheprovider workers/tests/model/test_decode_graphs.py \
    workers/tests/model/test_decode_fusion.py
  INLAID_PDL_LORA=1 step bench7b 120 python3 bench/engine/bench_decode.py --out "$W" --tag pdl-run2 --shapes 7b \
    --quants int4 --batches 1,2,4,8 --lora-batch 1 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 \
    --prefill-seqs 0 --cost-points 0 --pdl 0,1,3 --pdl-rounds 3 --reps 10 --warmup 2 --max-seconds 100
  step bench13b 70 python3 bench/engine/bench_decode.py --out "$W" --tag pdl-run2-13b --shapes 13b --quants int4 \
    --batches 1,2 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 \
    --cost-points 0 --pdl 0,1 --pdl-rounds 3 --reps 10 --warmup 2 --max-seconds 50
}
{
  "$RUN"
  echo "total $(( $(date +%s) - T0 )) s"
} 2>&1 | tee "$OUT/run.log"
cp "$W"/*.md "$W"/pdl_check.json "$OUT"/ 2>/dev/null
tar czf "$OUT/pdl.tgz" -C "$W" .
ls -la "$OUT"
