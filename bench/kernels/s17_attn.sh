#!/usr/bin/env bash
# Session 17 (issue 4): the row decode attention's work split (many warps a program, few partitions) at batches
# 1 / 2 / 4 and 512 / 2048 cached tokens: s17_attn.py's kernel-alone sweep (iso), then the 7B int4 step A/B of the
# shipped options, a control and the iso sweep's best (alternating rounds, one runner), then optionally GPU tests.
# Usage (device, repo root): OUT=$OUT [ATTN_S=200] [PRECOMPILE=8] [STEP=...] [TESTS_S=0] [TESTS=...] bash bench/kernels/s17_attn.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
{
  device_header
  t0=$(date +%s)
  timeout "${ATTN_S:-200}" python3 bench/kernels/s17_attn.py --out "$OUT" --precompile "${PRECOMPILE:-8}" \
    --batches "${BATCHES:-1,2,4}" --contexts "${CONTEXTS:-512,2048}" --iso-contexts "${ISO_CONTEXTS:-}" --rounds "${ROUNDS:-8}" --pick "${PICK:-3}" --stages "${STAGES:-iso,step}" \
    --step "${STEP:-}" --tag "${TAG:-s17-attn}" 2>&1 | grep -v -e UserWarning -e _warn_once
  echo "== s17_attn rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
  if [ "${TESTS_S:-0}" -gt 0 ]; then
    t2=$(date +%s)
    # shellcheck disable=SC2086
    timeout "$TESTS_S" python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadfile -rs \
      ${TESTS:-workers/tests/kernels/test_decode_row.py workers/tests/kernels/test_decode_row_rope.py} \
      >"$OUT/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t2 )) s"
    grep -E "passed|failed|FAILED|ERROR|SKIPPED" "$OUT/gpu-tests.log" | tail -n 25
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$OUT/log.txt"
