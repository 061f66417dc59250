#!/usr/bin/env bash
# Session 19 (issue 4), one device call: (1) the GPU tests of the grouped-LoRA rule's files and the lead's closing
# ones, verbose (every outcome named); (2) s19_lora.py, the LoRA step against the base step under the shipped
# kernel_lora.GROUPED setting (7B int4: batch 32 table cells, then batches 1 / 4 / 16).
# Usage (device, repo root): OUT=... [TESTS_S=170] [BENCH_S=150] [MAX_S=110] [ONLY_TESTS=...] bash bench/kernels/s19_lora.sh
set -o pipefail
OUT=${OUT:-/tmp/s19-lora-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=${ONLY_TESTS:-"workers/tests/kernels/test_lora_grouped.py workers/tests/kernels/test_lora_sgmv.py
  workers/tests/kernels/test_pdl_lora.py workers/tests/model/test_lora_auto.py workers/tests/kernels/test_tcl_xp.py
  workers/tests/kernels/test_tcsx_xp.py workers/tests/model/test_graph_input.py
  workers/tests/engine/test_async_scheduling_gpu.py"}
{
  t0=$(date +%s)
  echo "uptime $(cut -d. -f1 /proc/uptime) s"
  device_header
  for f in $TESTS; do [ -e "${f%%::*}" ] || echo "MISSING $f"; done
  if [ "${TESTS_S:-170}" -gt 0 ]; then
    # shellcheck disable=SC2086
    timeout "${TESTS_S:-170}" python3 -m pytest -v -p no:cacheprovider -n 8 --dist loadfile -rs --durations=15 $TESTS \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t0 )) s"
    echo "passed $(grep -c ' PASSED ' "$OUT/gpu-tests.log"), skipped $(grep -c ' SKIPPED ' "$OUT/gpu-tests.log")"
    grep -E " FAILED | ERROR |passed|failed" "$OUT/gpu-tests.log" | tail -n 25
  fi
  t1=$(date +%s)
  if [ "${BENCH_S:-150}" -gt 0 ]; then
    timeout "${BENCH_S:-150}" python3 bench/kernels/s19_lora.py --out "$OUT" --max-seconds "${MAX_S:-110}" \
      ${POINTS:+--points "$POINTS"} 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== bench rc $? in $(( $(date +%s) - t1 )) s"
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s19-lora-log.txt"
