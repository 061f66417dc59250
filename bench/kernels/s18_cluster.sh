#!/usr/bin/env bash
# Session 18 (issue 4): the cluster-merged row attention (row_cluster.cu) — s18_cluster.py's phases in one device call,
# each under its own timeout: check (NVRTC compile + correctness), iso (the kernel alone, PDL off / on), step (the 7B
# int4 decode step A/B, alternating rounds), then optionally the GPU test file. Outputs in $OUT/s18.tgz + log.txt.
# Usage (device, repo root): OUT=$OUT [CHECK_S=150] [CONFIGS=...] [ISO_S=90] [ISO=...] [ISO_B=1,2,4] [ISO_PDL=0,1]
#   [STEP_S=240] [PLAN=...] [PAIRS=...] [ROUNDS=8] [TESTS_S=0] bash bench/kernels/s18_cluster.sh
set -u
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers:bench/kernels
G=swiglu+cfin+g
Q=swiglu+cfin+q
PLAN=${PLAN:-"1=none,$G,$G@cl=8x4,$G@cl=4x8,$G@cl=16x2,$G@ctl;2=none,$Q,$Q@cl=4x4,$Q@cl=8x2,$Q@ctl;4=none,cfin,cfin@cl=2x4,cfin@cl=4x2,cfin@ctl"}
W=$(mktemp -d)
{
  device_header
  t0=$(date +%s)
  python3 -c "import cuda.bindings, sys; print('cuda-python', getattr(cuda.bindings, '__version__', '?'))" 2>&1
  LAST_RC=0
  step() {  # NAME LIMIT ARGS...
    local name=$1 limit=$2 t1
    shift 2
    t1=$(date +%s)
    if [ "$limit" -gt 0 ]; then
      timeout "$limit" python3 bench/kernels/s18_cluster.py "$name" --out "$W" "$@" 2>&1 | grep -v -e UserWarning -e _warn_once
      LAST_RC=${PIPESTATUS[0]}
      echo "== $name rc $LAST_RC in $(( $(date +%s) - t1 )) s"
    fi
  }
  step check "${CHECK_S:-150}" ${CONFIGS:+--configs "$CONFIGS"}
  if [ "${CHECK_S:-150}" -gt 0 ] && [ "$LAST_RC" != 0 ]; then
    echo "check failed: timing phases skipped"; ISO_S=0; STEP_S=0
  fi
  step iso "${ISO_S:-90}" --iso "${ISO:-row,8x4,4x8,16x2,8x2,4x4,row/ctl}" --iso-batches "${ISO_B:-1,2,4}" --iso-pdl "${ISO_PDL:-0,1}"
  step step "${STEP_S:-240}" --plan "$PLAN" --rounds "${ROUNDS:-8}" ${PAIRS:+--pairs "$PAIRS"}
  if [ "${TESTS_S:-0}" -gt 0 ]; then
    t2=$(date +%s)
    timeout "$TESTS_S" python3 -m pytest -q -p no:cacheprovider -rs workers/tests/kernels/test_row_cluster.py \
      >"$W/gpu-tests.log" 2>&1
    echo "== GPU tests rc $? in $(( $(date +%s) - t2 )) s"
    tail -n 15 "$W/gpu-tests.log"
  fi
  echo "wall $(( $(date +%s) - t0 )) s"; date -u
} 2>&1 | tee "$W/log.txt"
tar czf "$OUT/s18.tgz" -C "$W" . && cp "$W/log.txt" "$OUT/log.txt"
