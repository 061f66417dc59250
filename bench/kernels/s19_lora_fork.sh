#!/usr/bin/env bash
# Session 19 (issue 4), one device call: (1) s19_lora_fork.py, the LoRA shrink ahead of the base GEMV
# (kernels.lora_early: "before" on the same stream, "fork" on a graph branch; its runs also timed a since-removed "fork-plain") against the shipped order,
# and the per-bucket policy ("auto"), batches 1 / 2 / 4 / 8 / 16, with the batch-1 DOT dumps; (2) the GPU tests of the new ordering (test_lora_early.py) and of the
# partials path it uses (test_lora_partials.py). The working tree as carried is what runs (the device copy's git HEAD
# may be stale; nothing is restored from it).
# Usage (device, repo root): OUT=... [BENCH_S=130] [MAX_S=80] [TESTS_S=60] [TESTS=...] [BENCH_ARGS=...] bash bench/kernels/s19_lora_fork.sh
set -o pipefail
OUT=${OUT:-/tmp/s19-lora-fork-out}
mkdir -p "$OUT"
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
TESTS=${TESTS:-"workers/tests/kernels/test_lora_early.py workers/tests/kernels/test_lora_partials.py"}
{
  t0=$(date +%s)
  echo "uptime $(cut -d. -f1 /proc/uptime) s"
  device_header
  for f in $TESTS; do [ -e "$f" ] || echo "MISSING $f"; done
  timeout "${BENCH_S:-130}" python3 bench/kernels/s19_lora_fork.py --out "$OUT" --max-seconds "${MAX_S:-80}" ${BENCH_ARGS:-} \
    2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== bench rc $? in $(( $(date +%s) - t0 )) s"
  (cd "$OUT" && ls dot-*.dot.gz >/dev/null 2>&1 && tar czf dots.tgz dot-*.dot.gz && rm -f dot-*.dot.gz)
  t1=$(date +%s)
  if [ "${TESTS_S:-60}" -gt 0 ]; then
    # shellcheck disable=SC2086
    timeout "${TESTS_S:-60}" python3 -m pytest -v -p no:cacheprovider -n 2 --dist loadfile -rs $TESTS \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t1 )) s"
    echo "passed $(grep -c ' PASSED ' "$OUT/gpu-tests.log"), skipped $(grep -c ' SKIPPED ' "$OUT/gpu-tests.log")"
    grep -E " FAILED | ERROR |passed|failed|Error" "$OUT/gpu-tests.log" | tail -n 25
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/s19-lora-fork-log.txt"
