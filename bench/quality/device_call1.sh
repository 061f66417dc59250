# Device call 1 of 2 (carry .carry-tasks/p1): park the GGUF's first xz half in /tmp/inl, then time the
# quantizer on a Llama-2-7B-shaped model with random weights (bench7b.py) while the GPU is ours anyway.
mkdir -p /tmp/inl && cp .carry-tasks/p1/gguf.xz.part00 /tmp/inl/ && ls -la /tmp/inl || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
export PYTHONPATH=$PWD/workers PYTHONUNBUFFERED=1
python3 bench/quality/bench7b.py --layers ${LAYERS:-2} --seqs 128 --seq-len 2048 --out "$OUT/quant-time-7b.json" 2>&1 \
  | grep -v -E "Warning|warnings.warn" | tee "$OUT/log7b.txt"
