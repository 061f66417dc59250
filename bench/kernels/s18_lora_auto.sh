#!/usr/bin/env bash
# Session 18 (issue 4), one device call: (1) s18_lora_auto.py, the decode graphs' per-step choice of LoRA kernels
# (model.kernel_lora.pick_grouped) against BGMV only at 7B int4 batch 32: rank 16 q/k/v/o with 32 distinct adapters
# (the rule picks BGMV: the control) and 8 adapters of 4 rows (grouped), rank 64 on all 7 linears with one adapter
# (grouped); alternating rounds on one runner; (2) the GPU tests of the touched files and the lead's closing ones.
# Each phase has its own limit; on a freshly booted machine (uptime under 300 s: its start counts against the
# allowance) both shrink so that boot + phases stay within ALLOW_S.
# Usage (device, repo root): OUT=... [ALLOW_S=205] [BENCH_S=62] [TESTS_S=92] bash bench/kernels/s18_lora_auto.sh
set -o pipefail
OUT=${OUT:-/tmp/s18-lora-auto-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
BENCH_S=${BENCH_S:-62}
TESTS_S=${TESTS_S:-92}
TESTS="workers/tests/kernels/test_lora_grouped.py workers/tests/kernels/test_lora_sgmv.py
  workers/tests/kernels/test_pdl_lora.py workers/tests/model/test_lora_auto.py workers/tests/kernels/test_tcl_xp.py
  workers/tests/kernels/test_tcsx_xp.py workers/tests/model/test_graph_input.py
  workers/tests/engine/test_async_scheduling_gpu.py"
{
  t0=$(date +%s)
  up=$(cut -d. -f1 /proc/uptime)
  if [ "$up" -lt 300 ]; then
    left=$(( ${ALLOW_S:-205} - up - 6 ))
    if [ $(( BENCH_S + TESTS_S )) -gt "$left" ]; then
      BENCH_S=$(( left * 45 / 100 )); TESTS_S=$(( left - BENCH_S ))
    fi
  fi
  echo "uptime ${up} s: bench limit ${BENCH_S} s, tests limit ${TESTS_S} s"
  device_header
  for f in $TESTS; do [ -f "$f" ] || echo "MISSING $f"; done
  timeout "$BENCH_S" python3 bench/kernels/s18_lora_auto.py --out "$OUT" --max-seconds $(( BENCH_S * 2 / 3 )) \
    --points 16:qkvo:32,16:qkvo:8,64:all:1 --rounds 8 --replays 8 --reps 5 2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== bench rc $? in $(( $(date +%s) - t0 )) s"
  t1=$(date +%s)
  # shellcheck disable=SC2086
  # -v: every test's outcome is logged as it ends (a run cut by its limit prints no summary)
  timeout "$TESTS_S" python3 -m pytest -v -p no:cacheprovider -n 8 --dist loadfile -rs $TESTS >"$OUT/gpu-tests.log" 2>&1
  echo "== GPU tests rc $? in $(( $(date +%s) - t1 )) s"
  echo "passed $(grep -c ' PASSED ' "$OUT/gpu-tests.log"), skipped $(grep -c ' SKIPPED ' "$OUT/gpu-tests.log")"
  grep -E " FAILED | ERROR |passed|failed" "$OUT/gpu-tests.log" | tail -n 25
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s18-lora-auto-log.txt"
tar czf /tmp/s18-lora-auto.tgz -C "$OUT" . && mv /tmp/s18-lora-auto.tgz "$OUT/"
