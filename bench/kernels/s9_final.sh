#!/usr/bin/env bash
# Session 9, device call 3, with the table this session ships (the tree's): (1) the 7B and the 13B int4 decode step at
# batch 1-16 with that table ("ship") and HEAD's ("old") alternating round by round on one runner (s9_decode.py;
# tables from bench/results/kernels-2026-11-30-s9-tables3.json), (2) the GPU tests (kernels, decode graphs and
# fusions, prefill graphs, device sampler / logits, prompt logprobs, prefix cache) with INLAID_QMM_TUNED=1.
# Everything comes back in $OUT/s9-final.tgz.
# Usage (device): OUT=... bash bench/kernels/s9_final.sh [DECODE_S] [ROUNDS] [END_S]
set -o pipefail
OUT=${OUT:-/tmp/s9-out}
WORK=/tmp/s9-final
rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
DECODE_S=${1:-100}
ROUNDS=${2:-8}
END_S=${3:-560}
TABLE=workers/inlaid_worker/kernels/tuned/nvidia-h200.json
DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
     --reps 10 --warmup 2 --batches 1,2,4,8,16 --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S")
GPU_TESTS=(workers/tests/kernels workers/tests/model/test_decode_graphs.py workers/tests/model/test_decode_fusion.py
  workers/tests/model/test_graph_staging_gpu.py workers/tests/model/test_prefill_graphs.py
  workers/tests/model/test_prefill_graph_policy.py workers/tests/model/test_eager_sdpa_backends.py
  workers/tests/engine/test_device_sampler.py workers/tests/engine/test_device_logits.py
  workers/tests/engine/test_prompt_logprobs_gpu.py workers/tests/engine/test_prefix_cache_gpu.py)
decode() {  # decode TAG SHAPE TABLES FUSIONS
  local t=$(date +%s)
  S9_TABLES="$3" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers timeout $((DECODE_S + 60)) \
    python3 bench/kernels/s9_decode.py --out "$OUT" --tag "$1" --shapes "$2" --quants int4 --fusions "$4" "${DEC[@]}" \
    | grep -E '^\| (7b|13b) \| int4 \| [0-9]'
  echo "== decode $1 rc $? in $(( $(date +%s) - t )) s"
}
{
  device_header
  t0=$(date +%s)
  python3 bench/kernels/s9_gemv.py tables --out "$WORK" --patches bench/results/kernels-2026-11-30-s9-tables3.json \
    --old-table "$TABLE"
  decode s9-final 7b "ship=$WORK/ship-table.json,old=$WORK/old-table.json" ship,old
  decode s9-final-13b 13b "ship=$WORK/ship-table.json,old=$WORK/old-table.json" ship,old
  mkdir -p "$WORK/out" && cp "$OUT"/* "$WORK/out"/  # (call 1's $OUT lost its files during the tests)
  left=$(( END_S - ($(date +%s) - t0) - 25 ))
  if (( left > 60 )); then
    echo "== GPU tests (the tree's table, INLAID_QMM_TUNED=1), limit $left s"
    INLAID_QMM_TUNED=1 PYTHONPATH=workers timeout "$left" python3 -m pytest -q -p no:cacheprovider -n 8 \
      --dist loadfile -rs "${GPU_TESTS[@]}" >"$WORK/gpu-tests.log" 2>&1
    echo "== GPU tests rc $?"; tail -n 40 "$WORK/gpu-tests.log"
  else
    echo "== GPU tests skipped: $left s left"
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$WORK/log.txt"
mkdir -p "$WORK/out" && cp -r "$OUT"/. "$WORK/out"/ && tar czf /tmp/s9-final.tgz -C "$WORK" . \
  && find "$OUT" -type f -delete && mv /tmp/s9-final.tgz "$OUT/"
