#!/usr/bin/env bash
# Session 18 (issue 4), one device call: (1) s18_lora.py, the 7B int4 batch-32 decode step with rank-16 / rank-64
# adapters on q/k/v/o and all 7 linears, 1 and 32 adapters, the BGMV LoRA kernels against the grouped ones
# (kernels.lora_grouped), alternating rounds on one runner, with torch.profiler tables of the rank-64 all-linear
# points; (2) the GPU tests of the touched LoRA files.
# Usage (device, repo root): OUT=... [BENCH_S=85] [MAX_S=60] [TESTS_S=40] bash bench/kernels/s18_lora.sh
set -o pipefail
OUT=${OUT:-/tmp/s18-lora-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  t0=$(date +%s)
  timeout "${BENCH_S:-85}" python3 bench/kernels/s18_lora.py --out "$OUT" --max-seconds "${MAX_S:-60}" \
    --points 16:qkvo:32,16:qkvo:1,16:all:1,16:all:32,64:all:1,64:all:32,64:qkvo:1,64:qkvo:32 \
    --rounds 8 --replays 8 --reps 5 2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== bench rc $? in $(( $(date +%s) - t0 )) s"
  t1=$(date +%s)
  timeout "${TESTS_S:-40}" python3 -m pytest -q -p no:cacheprovider -n 3 --dist loadfile -rs \
    workers/tests/kernels/test_lora_grouped.py workers/tests/kernels/test_lora_sgmv.py \
    workers/tests/kernels/test_pdl_lora.py >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t1 )) s"; grep -E "passed|failed|FAILED|ERROR|Error" "$OUT/gpu-tests.log" | tail -n 20
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s18-lora-log.txt"
