#!/usr/bin/env bash
# Session 19 (issue 4), one device call: (1) s19_lora_b1.py, the batch-1 LoRA ablation and the split-K partials lever
# (lora_fused.PARTIALS_MAX_ROWS) against the path shipped before it, batches 1 / 4 / 16; (2) the GPU tests of the
# changed LoRA kernels. Files another helper has changed in the checkout (the tuner table, quant_tcsx*) are put back to
# HEAD on the device copy first, so both variants run the committed base step.
# Usage (device, repo root): OUT=... [BENCH_S=150] [TESTS_S=90] bash bench/kernels/s19_lora_b1.sh
set -o pipefail
OUT=${OUT:-/tmp/s19-lora-b1-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
OTHERS="workers/inlaid_worker/kernels/tuned/nvidia-h200.json workers/inlaid_worker/kernels/quant_matmul_config.py
  workers/inlaid_worker/kernels/quant_tcsx.py"
TESTS="workers/tests/kernels/test_lora_partials.py workers/tests/kernels/test_lora_sgmv.py
  workers/tests/kernels/test_lora_grouped.py"
{
  t0=$(date +%s)
  echo "uptime $(cut -d. -f1 /proc/uptime) s"
  device_header
  if git rev-parse HEAD >/dev/null 2>&1; then
    for f in $OTHERS; do git show "HEAD:$f" >"$f.head" && mv "$f.head" "$f"; done
    echo "tree: HEAD $(git rev-parse --short HEAD), changed files:"; git status --short | grep -v '^??' | head -20
  else
    echo "WARNING: no git on the device copy: the checkout's files as carried"
  fi
  for f in $TESTS; do [ -e "$f" ] || echo "MISSING $f"; done
  timeout "${BENCH_S:-150}" python3 bench/kernels/s19_lora_b1.py --out "$OUT" --max-seconds "${MAX_S:-100}" \
    2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== bench rc $? in $(( $(date +%s) - t0 )) s"
  t1=$(date +%s)
  if [ "${TESTS_S:-90}" -gt 0 ]; then
    # shellcheck disable=SC2086
    timeout "${TESTS_S:-90}" python3 -m pytest -v -p no:cacheprovider -n 3 --dist loadfile -rs $TESTS \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t1 )) s"
    echo "passed $(grep -c ' PASSED ' "$OUT/gpu-tests.log"), skipped $(grep -c ' SKIPPED ' "$OUT/gpu-tests.log")"
    grep -E " FAILED | ERROR |passed|failed" "$OUT/gpu-tests.log" | tail -n 25
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s19-lora-b1-log.txt"
