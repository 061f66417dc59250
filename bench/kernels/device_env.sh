# Sourced by the kernel device scripts (gemv_h200.sh, gemv_v7.sh, int3_h200.sh, tc_h200.sh, tcl_h200.sh): their
# environment (tuned picks off, the benches' imports, NVLink multicast off), the machine header of their logs and
# their phases (the caller sets OUT, the report's folder, and WORK, the bench's work folder).
export INLAID_QMM_TUNED=0 PYTHONPATH=workers:bench/kernels NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SHARDS=${SHARDS:-8}

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
