# Device calls for PDL in the LoRA kernels, the Gluon tensor-core GEMVs and the 3-bit GEMV (H200, 2026-11-30,
# bench/results/decode-2026-11-30-pdl2.md). Call 1 ("run1"; it ran as `bash bench/engine/pdl2_h200.sh 300`, before
# this script took a run name):
#   1. bench_decode.py, 7B int4, batches 1-32 without and with rank-16 q/k/v/o adapters (min(batch, 32) distinct),
#      PDL modes 0,1,2 alternating per point; INLAID_PDL_MAX_BUCKET=256 INLAID_PDL_LORA=1: PDL at every bucket, so
#      the policy can be set from these rows
#   2. workers/tests/kernels/test_pdl_lora.py on the GPU (tensor-core / 3-bit GEMV graph chains; decode graphs of a
#      2-layer 7B with LoRA at buckets 1-8, every mode)
#   3. bench_decode.py, 7B int3, batches 1,2,8, modes 0,1,2 (hgemv3 at 1-2, 3-bit tc at 8)
#   4. ablation: 7B int4 batches 4,8,16 with INLAID_PDL_TCG=0 (tensor-core GEMVs launched plainly between the PDL
#      kernels, as in decode-2026-11-30-pdl run 1), modes 0,1
# Call 2 ("run2"): mode 4 (mode 1, but the tensor-core GEMVs let dependents launch after their K loop) against
#   modes 0, 1, 2 at the tensor-core buckets 4-32, without and with adapters (PDL at every bucket, as in call 1)
# Shipped tuner picks (INLAID_QMM_TUNED=1). Every step has a time limit inside BUDGET seconds in all.
# Usage (device): OUT=... bash bench/engine/pdl2_h200.sh run1|run2 [BUDGET]
set -o pipefail
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers
RUN=${1:-run1}
BUDGET=${2:-300}
T0=$(date +%s)
W=/tmp/pdl2work
mkdir -p "$W"
source bench/engine/budget_steps.sh  # left, step
COMMON=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
        --pdl-rounds 3 --reps 10 --warmup 2)
run1() {
  device_header
  INLAID_PDL_MAX_BUCKET=256 INLAID_PDL_LORA=1 step bench7b 140 python3 bench/engine/bench_decode.py --out "$W" \
    --tag pdl2 --shapes 7b --quants int4 --batches 1,2,4,8,16,32 --lora-at-batches 32 --pdl 0,1,2 "${COMMON[@]}" \
    --max-seconds 120
  step tests 110 python3 -m pytest -q -x -p no:cacheprovider workers/tests/kernels/test_pdl_lora.py
  INLAID_PDL_MAX_BUCKET=256 step bench7b-int3 45 python3 bench/engine/bench_decode.py --out "$W" --tag pdl2-int3 \
    --shapes 7b --quants int3 --batches 1,2,8 --pdl 0,1,2 "${COMMON[@]}" --max-seconds 35
  INLAID_PDL_MAX_BUCKET=256 INLAID_PDL_TCG=0 step bench7b-tcg0 35 python3 bench/engine/bench_decode.py --out "$W" \
    --tag pdl2-tcg0 --shapes 7b --quants int4 --batches 4,8,16 --pdl 0,1 "${COMMON[@]}" --max-seconds 25
}
run2() {
  device_header
  INLAID_PDL_MAX_BUCKET=256 INLAID_PDL_LORA=1 step bench7b-mixed 75 python3 bench/engine/bench_decode.py --out "$W" \
    --tag pdl2-mixed --shapes 7b --quants int4 --batches 4,8,16,32 --lora-at-batches 32 --pdl 0,1,2,4 \
    "${COMMON[@]}" --max-seconds 60
}
{
  "$RUN"
  echo "total $(( $(date +%s) - T0 )) s"
} 2>&1 | tee "$OUT/run.log"
cp "$W"/*.md "$W"/*.json "$OUT"/ 2>/dev/null
ls -la "$OUT"
