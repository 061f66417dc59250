# Sourced by the session 9 device scripts (s9_gemv.sh, s9_final.sh, s9_more.sh, s9b_final.sh) after device_env.sh:
# the GPU test lists and the tables' decode comparison (the caller sets OUT, DECODE_S and ROUNDS first).

# the GPU tests: GPU_MODEL_TESTS, then test_triton_backend.py where a script runs it, then GPU_ENGINE_TESTS
GPU_MODEL_TESTS=(workers/tests/kernels workers/tests/model/test_decode_graphs.py workers/tests/model/test_decode_fusion.py
  workers/tests/model/test_graph_staging_gpu.py workers/tests/model/test_prefill_graphs.py
  workers/tests/model/test_prefill_graph_policy.py workers/tests/model/test_eager_sdpa_backends.py)
GPU_ENGINE_TESTS=(workers/tests/engine/test_device_sampler.py workers/tests/engine/test_device_logits.py
  workers/tests/engine/test_prompt_logprobs_gpu.py workers/tests/engine/test_prefix_cache_gpu.py)
TRITON_BACKEND_TEST=workers/tests/model/test_triton_backend.py

# bench_decode.py's arguments for the int4 decode step at batch 1-16, base model only, tables alternating
DEC=(--lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0
     --reps 10 --warmup 2 --batches 1,2,4,8,16 --fusion-rounds "$ROUNDS" --max-seconds "$DECODE_S")

# decode TAG SHAPE TABLES FUSIONS: s9_decode.py with TABLES (S9_TABLES) alternating as FUSIONS, its table rows and time
decode() {
  local t=$(date +%s)
  S9_TABLES="$3" INLAID_QMM_TUNED=1 PYTHONUNBUFFERED=1 PYTHONPATH=workers timeout $((DECODE_S + 60)) \
    python3 bench/kernels/s9_decode.py --out "$OUT" --tag "$1" --shapes "$2" --quants int4 --fusions "$4" "${DEC[@]}" \
    | grep -E '^\| (7b|13b) \| int4 \| [0-9]'
  echo "== decode $1 rc $? in $(( $(date +%s) - t )) s"
}
