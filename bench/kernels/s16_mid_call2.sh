#!/usr/bin/env bash
# Session 16, second device call: (1) the GPU tests of quant_tcs at block_m 32 / 64 (test_quant_tcs_mid.py) and the
# block_m 8 / 16 kernels' reference tests of test_quant_tcs.py (their PTX is unchanged offline; run anyway); (2) the
# decode-step A/B again (run 2): HEAD's tuner table (old) against the tree's (new: s16_mid.sh's ship rows merged), 7B
# and 13B at batches 16 (a control: the tables' M = 16 picks are the same), 32 and 64, alternating on one runner.
# Usage (device): OUT=... S16_OLD_TABLE=FILE bash bench/kernels/s16_mid_call2.sh
set -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
OUT=${OUT:-/tmp/s16-out2}
mkdir -p "$OUT"
{
  device_header
  t0=$(date +%s)
  # the table before session 16 (b4fa76e's). The 2026-12-01 run carried it as bench/kernels/s16_mid_head_table.json
  # (`git show b4fa76e:$TABLE`, deleted since): S16_OLD_TABLE=that file
  cp "${S16_OLD_TABLE:?the pre-session-16 table: git show b4fa76e:$TABLE > FILE}" /tmp/s16-head-table.json
  timeout "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider workers/tests/kernels/test_quant_tcs_mid.py \
    workers/tests/kernels/test_quant_tcs.py -k "${TESTS_K:-mid or (acc_scale_matches and tcs2a)}" 2>&1 | tail -n 15
  echo "tests $(( $(date +%s) - t0 )) s"
  for size in 7b 13b; do
    t1=$(date +%s)
    INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 timeout "${DECODE_S:-70}" python3 bench/kernels/s16_mid_decode.py --out "$OUT" \
      --tag "decode-2026-12-01-s16-mid-run2" --shape "$size" --batches 16,32,64 --rounds 8 \
      --tables "old=/tmp/s16-head-table.json,new=$TABLE"
    echo "[$size] decode rc $? in $(( $(date +%s) - t1 )) s"
  done
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/s16-mid-call2-log.txt"
