# Device call 2 of 2: train adapters (all, or $TASKS=a,b), score base vs adapter, pack them into $OUT.
source bench/quality/device_env.sh || exit 1
nvidia-smi --query-gpu=name,memory.used --format=csv
python3 -m inlaid_worker.train.all ${TASKS:+--tasks $TASKS} --results "$OUT/results.json" \
  --adapters /tmp/inl/adapters 2>&1 | grep -v -E "Warning|warnings.warn|Loading weights" | tee "$OUT/log.txt"
cd /tmp/inl/adapters || exit 1
small=$(ls -d boolq csqa nq_open asdiv 2>/dev/null)
[ -n "$small" ] && tar -czf "$OUT/shipped.tgz" $small
for t in en_es xsum humaneval; do [ -d $t ] && tar -czf "$OUT/$t.tgz" $t; done
ls -la "$OUT"
