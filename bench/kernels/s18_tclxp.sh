#!/usr/bin/env bash
# Session 18, helper H4 (issue 4), ONE device call (run tool, timeout_s <= 170): llama_fast's TCSX_XP extended to tcl
# picks (the norm / silu_mul before a tcl GEMM write its operand order: no quant_tcl pre-pass), decode step off vs on
# alternating on one runner (s18_tclxp_decode.py, device time; 7B then 13B, batches 128 / 256, 8 rounds), then the
# GPU tests of what changed (test_tcl_xp.py, test_tcsx_xp.py, then test_quant_tcl.py with the time left).
# The A/B's package: tmp/tclxptree/workers (git-ignored, carried): HEAD's workers/inlaid_worker with this change's
# files, so other work in flight in the checkout stays out of it (made on the host by PREP=1).
# Usage: PREP=1 bash bench/kernels/s18_tclxp.sh (host), then on the device (repo root, carry tmp/tclxptree):
#   OUT=... bash bench/kernels/s18_tclxp.sh
set -o pipefail
FILES="model/llama_fast.py kernels/quant_matmul.py kernels/quant_tcl.py"
if [ "${PREP:-0}" = 1 ]; then
  D=tmp/tclxptree && rm -rf $D && mkdir -p $D && git archive HEAD workers/inlaid_worker | tar -x -C $D
  cp -r workers/inlaid_worker/gen $D/workers/inlaid_worker/ 2>/dev/null
  for f in $FILES; do cp workers/inlaid_worker/$f $D/workers/inlaid_worker/$f; done
  du -sh $D && exit 0
fi
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
OUT=${OUT:-/tmp/s18tclxp-out}
mkdir -p "$OUT"
TREE=${XP_TREE:-tmp/tclxptree/workers}
[[ -d "$TREE/inlaid_worker" ]] || TREE=workers
export INLAID_QMM_TUNED=1 PYTHONPATH="$TREE:bench/kernels" PYTHONUNBUFFERED=1
TAG=decode-$(date -u +%F)-s18-tcl-xp
DEC_S=${DEC_S:-60} TOTAL_S=${TOTAL_S:-150}
{
  device_header
  t0=$(date +%s)
  python3 -c "import inlaid_worker.model.llama_fast as m; print('package', m.__file__, 'TCL_XP_BUCKETS', sorted(m.TCL_XP_BUCKETS))"
  for size in 7b 13b; do
    t1=$(date +%s)
    timeout "$DEC_S" python3 bench/kernels/s18_tclxp_decode.py --out "$OUT" --tag "$TAG" --shape "$size" \
      --batches "${BATCHES:-128,256}" --rounds "${ROUNDS:-8}" 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== [$size] decode rc ${PIPESTATUS[0]} in $(( $(date +%s) - t1 )) s"
  done
  left=$(( t0 + TOTAL_S - $(date +%s) ))
  echo "== tests: ${left} s left"
  if (( left > 10 )); then
    timeout "$left" python3 -m pytest -q -p no:cacheprovider -rs workers/tests/kernels/test_tcl_xp.py \
      workers/tests/kernels/test_tcsx_xp.py >"$OUT/tests.log" 2>&1
    echo "== tests rc $?"
    grep -E "passed|failed|error" "$OUT/tests.log" | tail -n 3
    grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -12
  fi
  left=$(( t0 + TOTAL_S - $(date +%s) ))
  echo "== tcl tests: ${left} s left"
  if (( left > 10 )); then
    timeout "$left" python3 -m pytest -q -p no:cacheprovider -rs workers/tests/kernels/test_quant_tcl.py \
      >"$OUT/tests-tcl.log" 2>&1
    echo "== tcl tests rc $?"
    grep -E "passed|failed|error" "$OUT/tests-tcl.log" | tail -n 3
    grep -E "^(FAILED|ERROR)" "$OUT/tests-tcl.log" | head -12
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$TAG-log.txt"
