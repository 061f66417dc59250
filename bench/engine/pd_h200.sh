#!/usr/bin/env bash
# Session 8, helper PD: the two PDL leads on the H200 in one device call (bench/results/pdl-2026-11-30-s8-*).
#  1. in the background: bench/kernels/pd_tcg.py warm (8 processes fill Triton's cache) and the GPU tests of what
#     changed (decode attention cases and the PDL hazard test with "tiles", the tensor-core PDL graph chains);
#  2. pd_tcg.py: ring GEMVs (quant_tcg) plain / PDL / PDL + BALANCE / mode 2 / mode 3, us per call;
#  3. bench_decode_attn.py: "tiles" with and without its first-tile prefetch (attn_off / attn_on / step_off /
#     step_on, PDL hazard check);
#  4. pd_decode.py: 7B int4 decode step at batch 1-16, variants old / bal / pre alternating on one runner.
# Call 2 (`call2`, after BALANCE learnt each config's occupancy): the decode-kernel GPU tests, pd_tcg.py cases 0 and 3,
# and the decode step at batch 4 / 8 / 16 with old / bal alternating.
# Usage (device): OUT=... bash bench/engine/pd_h200.sh [DECODE_S] [call2]
set -o pipefail
source bench/kernels/device_env.sh
export PYTHONUNBUFFERED=1
DECODE_S=${1:-50}
call2() {
  device_header
  t=$(date +%s)
  timeout 40 python3 bench/kernels/pd_tcg.py warm 0 8 > "$OUT/warm-0.log" 2>&1 &
  timeout 40 python3 bench/kernels/pd_tcg.py warm 3 8 > "$OUT/warm-3.log" 2>&1 &
  PYTHONPATH=workers timeout 45 python3 -m pytest -q -p no:cacheprovider -rs \
    workers/tests/kernels/test_decode_kernels.py -k "paged_decode or prefetch" > "$OUT/tests2.log" 2>&1
  echo "== tests: rc $? in $(( $(date +%s) - t )) s"; tail -n 4 "$OUT/tests2.log"; wait
  t=$(date +%s)
  timeout 20 python3 bench/kernels/pd_tcg.py "$OUT/pdl-2026-11-30-s8-tcg2.json" 0,3 | tee "$OUT/tcg2.log"
  echo "== tcg bench: rc $? in $(( $(date +%s) - t )) s"
  t=$(date +%s)
  INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout $((DECODE_S + 15)) python3 bench/engine/pd_decode.py \
    --out "$OUT" --tag pd2 --shapes 7b --quants int4 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo \
    --per-batch-lora 0 --prefill-seqs 0 --cost-points 0 --reps 10 --warmup 2 --batches 4,8,16 \
    --fusions old,bal --fusion-rounds 3 --max-seconds "$DECODE_S" | grep -E '^\| 7b'
  echo "== decode: rc $? in $(( $(date +%s) - t )) s"
  date -u
}
if [ "${2:-}" = call2 ]; then call2 2>&1 | tee "$OUT/pd2.log"; exit; fi
{
  device_header
  t=$(date +%s)
  for i in 0 1 2 3 4 5 6 7; do
    timeout 60 python3 bench/kernels/pd_tcg.py warm "$i" 8 > "$OUT/warm-$i.log" 2>&1 &
  done
  PYTHONPATH=workers timeout 80 python3 -m pytest -q -p no:cacheprovider -rs \
    workers/tests/kernels/test_decode_kernels.py -k "paged_decode or prefetch" \
    workers/tests/kernels/test_pdl_lora.py -k "tensor_core_chain" > "$OUT/tests.log" 2>&1 &
  TESTS=$!
  for j in $(jobs -p); do [ "$j" = "$TESTS" ] || wait "$j"; done
  echo "== warm: $(( $(date +%s) - t )) s"; tail -q -n 1 "$OUT"/warm-*.log
  wait "$TESTS"; echo "== tests: rc $? in $(( $(date +%s) - t )) s"; tail -n 6 "$OUT/tests.log"
  t=$(date +%s)
  timeout 50 python3 bench/kernels/pd_tcg.py "$OUT/pdl-2026-11-30-s8-tcg.json" | tee "$OUT/tcg.log"
  echo "== tcg bench: rc $? in $(( $(date +%s) - t )) s"
  t=$(date +%s)
  PYTHONPATH=workers timeout 50 python3 bench/engine/bench_decode_attn.py --out "$OUT" --tag pd --attn-on \
    --variants tiles-nopre,tiles-pre --max-seconds 35 --points "1:512;1:4096;2:512;4:512;8:512" > "$OUT/attn.log"
  echo "== attention bench: rc $? in $(( $(date +%s) - t )) s"
  t=$(date +%s)
  INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout $((DECODE_S + 40)) python3 bench/engine/pd_decode.py \
    --out "$OUT" --tag pd --shapes 7b --quants int4 --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo \
    --per-batch-lora 0 --prefill-seqs 0 --cost-points 0 --reps 10 --warmup 2 --batches 1,2,4,8,16 \
    --fusions old,bal,pre --fusion-rounds 3 --max-seconds "$DECODE_S" | grep -v '^{' | tail -n 30
  echo "== decode: rc $? in $(( $(date +%s) - t )) s"
  date -u
} 2>&1 | tee "$OUT/pd.log"
