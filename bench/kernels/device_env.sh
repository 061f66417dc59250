# Sourced by the kernel device scripts (gemv_h200.sh, gemv_v7.sh, int3_h200.sh, tc_h200.sh, tcl_h200.sh, s8_gemv.sh, s9_*.sh): their
# environment (tuned picks off, the benches' imports, NVLink multicast off), the machine header of their logs and
# their phases (the caller sets OUT, the report's folder, and WORK, the bench's work folder).
export INLAID_QMM_TUNED=0 PYTHONPATH=workers:bench/kernels NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SHARDS=${SHARDS:-8}
TABLE=workers/inlaid_worker/kernels/tuned/nvidia-h200.json  # the shipped H200 tuner table (the retune scripts')

# date, GPU name / clocks / memory in use, torch and triton versions
device_header() {
  date -u
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
}

# guard_shards BENCH LIMIT_S: the SHARDS guard processes of bench/kernels/BENCH.py in the background
guard_shards() {
  for i in $(seq 0 $((SHARDS - 1))); do
    timeout "$2" python3 "bench/kernels/$1.py" guard --out "$WORK" --shard "$i" --shards "$SHARDS" &
  done
}

# check_shards BENCH LIMIT_S N: N check processes of bench/kernels/BENCH.py in the background, logs in $WORK
check_shards() {
  for i in $(seq 0 $(($3 - 1))); do
    timeout "$2" python3 "bench/kernels/$1.py" check --out "$WORK" --shard "$i" --shards "$3" >"$WORK/check-$i.log" 2>&1 &
  done
}

# phase1_done WHAT LINES: after phase 1's background processes, its time and the tests log's last LINES lines
phase1_done() {
  wait
  echo "phase 1 ($1) $(( $(date +%s) - t0 )) s"; tail -n "$2" "$OUT/tests.log"
}

# timing_phase BENCH LIMIT_S [ARGS...]: phase 2, bench/kernels/BENCH.py bench alone (ARGS appended), and its time
timing_phase() {
  local bench=$1 limit=$2
  shift 2
  t1=$(date +%s)
  timeout "$limit" python3 "bench/kernels/$bench.py" bench --out "$WORK" "$@"
  echo "phase 2 (timing) $(( $(date +%s) - t1 )) s"
}

# report_phase BENCH [ARGS...]: the report (JSON + markdown) of bench/kernels/BENCH.py to $OUT, ARGS appended
report_phase() {
  local bench=$1
  shift
  python3 "bench/kernels/$bench.py" report --out "$WORK" --dest "$OUT" --command "bash bench/kernels/$bench.sh" "$@"
}

# work_dirs OUT_DEFAULT WORK: $OUT (OUT_DEFAULT unless set) and WORK, the bench's work folder, emptied
work_dirs() {
  OUT=${OUT:-$1}
  WORK=$2
  rm -rf "$WORK" && mkdir -p "$OUT" "$WORK"
}

# archive_work NAME: $WORK with a copy of $OUT as $OUT/NAME.tgz, the only file left there (the device returns only
# a few files per call)
archive_work() {
  mkdir -p "$WORK/out" && cp -r "$OUT"/. "$WORK/out"/ && tar czf "/tmp/$1.tgz" -C "$WORK" . \
    && find "$OUT" -type f -delete && mv "/tmp/$1.tgz" "$OUT/"
}
