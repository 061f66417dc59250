#!/usr/bin/env bash
# Session 10 attention evidence + step (bench/kernels/s10_attn.py). OUT=... bash bench/kernels/s10_attn.sh
# Stages each under a time limit: matrix, ncu (Nsight Compute on the attention of a PDL graph), step, GPU tests.
source bench/kernels/device_env.sh
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels:bench/engine PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/s10out}; WORK=/tmp/s10work; rm -rf $WORK; mkdir -p $OUT $WORK
{
device_header
t0=$(date +%s)
timeout ${T_MATRIX:-75} python3 bench/kernels/s10_attn.py --out $OUT --stages matrix
PICK=$(python3 -c "import json,re; r=json.load(open('$OUT/s10-attn.json'))['matrix']; p=r[0]['tuned_pick']; print(','.join(re.search(k+r': (\d+)', p).group(1) for k in ('BLOCK_N','num_warps','num_stages')))" 2>/dev/null || echo 64,4,2)
echo "tiles pick for ncu: $PICK ($(( $(date +%s) - t0 )) s)"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
INLAID_DECODE_TILES_CONFIG=$PICK timeout ${T_NCU:-50} $NCU --clock-control none --graph-profiling node \
  -k regex:'_decode_kernel|_split_kernel|_merge_kernel' --section LaunchStats --section Occupancy \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
  --section SourceCounters -f -o $WORK/attn python3 bench/kernels/s10_attn.py ncu-target 2>&1 | grep -v "^==PROF==" | tail -20
$NCU -i $WORK/attn.ncu-rep --page details --csv > $OUT/s10-ncu-details.csv 2>&1
$NCU -i $WORK/attn.ncu-rep --page source --print-source sass --csv 2>&1 | gzip > $OUT/s10-ncu-source.csv.gz
echo "ncu done ($(( $(date +%s) - t0 )) s)"
timeout ${T_STEP:-75} python3 bench/kernels/s10_attn.py --out $OUT --stages step --rounds ${ROUNDS:-8}
echo "step done ($(( $(date +%s) - t0 )) s)"
timeout ${T_TEST:-45} python3 -m pytest -q -x workers/tests/kernels/test_decode_kernels.py 2>&1 | tail -15
echo "tests done ($(( $(date +%s) - t0 )) s)"
} 2>&1 | tee $OUT/s10-attn.log
