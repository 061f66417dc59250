#!/usr/bin/env bash
# Session 15, helper H2's device call: the tcs-deferral GPU tests, the regression A/B (s15_regress.sh: needs
# .carry_h2_old carried, PREP=1 bash bench/kernels/s15_regress.sh first) and the tcs-deferral A/B (s15_tcsfin.sh).
# Usage (device, repo root): OUT=$OUT bash bench/kernels/s15_h2.sh [regress|tcsfin|tests ...: the parts, default all]
set -u
source bench/kernels/device_env.sh
parts=${*:-tests regress tcsfin}
device_header | tee "$OUT/log.txt"
for p in $parts; do
  echo "== $p $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
  case $p in
    tests) timeout "${TEST_LIMIT:-90}" python3 -m pytest -q workers/tests/kernels/test_consumer_finish_tcs.py 2>&1 \
             | tail -15 | tee -a "$OUT/log.txt" ;;
    regress) bash bench/kernels/s15_regress.sh ;;
    tcsfin) bash bench/kernels/s15_tcsfin.sh ;;
  esac
done
echo "== done $(date -u +%H:%M:%S)" | tee -a "$OUT/log.txt"
