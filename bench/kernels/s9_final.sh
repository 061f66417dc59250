#!/usr/bin/env bash
# Session 9, device call 3, with the table this session ships (the tree's): (1) the 7B and the 13B int4 decode step at
# batch 1-16 with that table ("ship") and HEAD's ("old") alternating round by round on one runner (s9_decode.py;
# tables from bench/results/kernels-2026-11-30-s9-tables3.json), (2) the GPU tests (kernels, decode graphs and
# fusions, prefill graphs, device sampler / logits, prompt logprobs, prefix cache) with INLAID_QMM_TUNED=1.
# Everything comes back in $OUT/s9-final.tgz.
# Usage (device): OUT=... bash bench/kernels/s9_final.sh [DECODE_S] [ROUNDS] [END_S]
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
work_dirs /tmp/s9-out /tmp/s9-final
DECODE_S=${1:-100}
ROUNDS=${2:-8}
END_S=${3:-560}
source "$(dirname "${BASH_SOURCE[0]}")/s9_env.sh"
GPU_TESTS=("${GPU_MODEL_TESTS[@]}" "${GPU_ENGINE_TESTS[@]}")
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
archive_work s9-final
