#!/usr/bin/env bash
# Session 17, helper H5 (issue 4), ONE device call (run tool, timeout_s <= 150): llama_fast's TCSX_XP plumbing (the
# norm / silu_mul before a tcsx GEMM write its operand order: no quant_tcsx pre-pass), decode step off vs on
# alternating on one runner (s17_xp_decode.py, device time; 7B then 13B, batches 32 / 64 / 128, 8 rounds), then the
# GPU tests of what changed (test_tcsx_xp.py: bit-exact operand-order writes at 7B / 13B sizes, tcsx on xp = tcsx
# with its pre-pass, a tiny decode step with xp = without; test_decode_kernels.py's norm / silu cases).
# The A/B's package: tmp/xptree/workers (git-ignored, carried): HEAD's workers/inlaid_worker with this change's files,
# so other work in flight in the checkout stays out of it (made on the host by PREP=1).
# Usage: PREP=1 bash bench/kernels/s17_xp.sh (host), then on the device (repo root, carry tmp/xptree):
#   OUT=... bash bench/kernels/s17_xp.sh
set -o pipefail
FILES="model/llama_fast.py kernels/fused_norm.py kernels/silu_mul.py kernels/quant_matmul.py env_switch.py"
if [ "${PREP:-0}" = 1 ]; then
  D=tmp/xptree && rm -rf $D && mkdir -p $D && git archive HEAD workers/inlaid_worker | tar -x -C $D
  cp -r workers/inlaid_worker/gen $D/workers/inlaid_worker/ 2>/dev/null
  for f in $FILES; do cp workers/inlaid_worker/$f $D/workers/inlaid_worker/$f; done
  du -sh $D && exit 0
fi
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/device_env.sh"
OUT=${OUT:-/tmp/s17xp-out}
mkdir -p "$OUT"
TREE=${XP_TREE:-tmp/xptree/workers}
[[ -d "$TREE/inlaid_worker" ]] || TREE=workers
export INLAID_QMM_TUNED=1 PYTHONPATH="$TREE:bench/kernels" PYTHONUNBUFFERED=1
TAG=decode-$(date -u +%F)-s17-xp
DEC_S=${DEC_S:-52} TOTAL_S=${TOTAL_S:-145}
{
  device_header
  t0=$(date +%s)
  python3 -c "import inlaid_worker.model.llama_fast as m; print('package', m.__file__)"
  for size in 7b 13b; do
    t1=$(date +%s)
    timeout "$DEC_S" python3 bench/kernels/s17_xp_decode.py --out "$OUT" --tag "$TAG" --shape "$size" \
      --batches "${BATCHES:-32,64,128}" --rounds "${ROUNDS:-8}" 2>&1 | grep -v -e UserWarning -e _warn_once
    echo "== [$size] decode rc ${PIPESTATUS[0]} in $(( $(date +%s) - t1 )) s"
  done
  left=$(( t0 + TOTAL_S - $(date +%s) ))
  echo "== tests: ${left} s left"
  if (( left > 10 )); then
    timeout "$left" python3 -m pytest -q -p no:cacheprovider -rs workers/tests/kernels/test_tcsx_xp.py \
      workers/tests/kernels/test_decode_kernels.py -k "tcsx_xp or elementwise" >"$OUT/tests.log" 2>&1
    echo "== tests rc $?"
    grep -E "passed|failed|error" "$OUT/tests.log" | tail -n 3
    grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -12
  fi
  echo "total $(( $(date +%s) - t0 )) s"
  date -u
} 2>&1 | tee "$OUT/$TAG-log.txt"
