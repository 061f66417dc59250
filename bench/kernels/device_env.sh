# Sourced by the kernel device scripts (gemv_h200.sh, tc_h200.sh): their environment (tuned picks off, the
# benches' imports, NVLink multicast off) and the machine header of their logs.
export INLAID_QMM_TUNED=0 PYTHONPATH=workers:bench/kernels NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SHARDS=${SHARDS:-8}

# date, GPU name / clocks / memory in use, torch and triton versions
device_header() {
  date -u
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
}
