# Session 8, helper AT: batch-1..16 paged decode attention on the H200, one device call.
#  1. GPU tests of the decode attention (the kernel cases in-process on CUDA, the PDL prefetch hazard test);
#  2. bench_decode_attn.py: "tiles" (the tile kernel) against "split" and its options, per batch and context;
#  3. the split variant with the least summed PDL step time (rope + attention) over the batch-1 contexts goes to the
#     step benchmark through INLAID_DECODE_SPLIT;
#  4. bench_decode.py: 7B int4 decode steps at batch 1/2/4/16 with the fusions "tiles" and "split" alternating
#     round by round on one runner (shipped tuner picks, PDL policy as shipped);
#  5. if time is left (TOTAL_S): the GPU test of every decode fusion in CUDA graphs against the torch reference.
# Usage (device): OUT=... bash bench/engine/at_h200.sh [ATTN_S] [STEPS_S] [TOTAL_S] [TAG]
set -o pipefail
source bench/kernels/device_env.sh
export PYTHONUNBUFFERED=1 PYTHONPATH=workers
ATTN_S=${1:-60}
STEPS_S=${2:-40}
TOTAL_S=${3:-180}
TAG=${4:-s8}
T0=$(date +%s)
{
  device_header
  t=$(date +%s)
  timeout 45 python3 -m pytest -q -p no:cacheprovider -rs workers/tests/kernels/test_decode_kernels.py \
    -k "paged_decode or prefetch or validation" 2>&1 | tail -n 15 | tee "$OUT/tests.log"
  echo "== tests: rc $? in $(( $(date +%s) - t )) s"
  t=$(date +%s)
  timeout $((ATTN_S + 40)) python3 bench/engine/bench_decode_attn.py --out "$OUT" --tag "$TAG" --profile \
    --max-seconds "$ATTN_S" --points "1:512;1:4096;16:512;4:512;2:512;1:2048;16:4096;4:4096;2:4096" > "$OUT/attn.log"
  echo "== attention bench: rc $? in $(( $(date +%s) - t )) s"
  PICK=$(python3 - "$OUT" "$TAG" <<'PY'
import json, sys, glob
rows = json.load(open(glob.glob(f"{sys.argv[1]}/attention-*-{sys.argv[2]}.json")[0]))["rows"]
keys = ("num_warps", "merge", "prefetch", "lookahead", "block_n")
tot, env = {}, {}
for r in rows:
    if r["batch"] != 1 or not r["variant"].startswith("split"):
        continue
    ok = "step_on_us" in r and r.get("pdl_err", 1) < 5e-3
    tot[r["variant"]] = tot.get(r["variant"], 0.0) + (r["step_on_us"] if ok else float("inf"))
    opts = [f"{k}={r[k]}" for k in keys if k in r]
    if r["parts"] < 32:
        opts.append(f"parts_div={32 // r['parts']}")
    env[r["variant"]] = ",".join(opts)
best = min(tot, key=tot.get) if tot else "split"
print(env.get(best, ""))
print(json.dumps(dict(pick=best, batch1_step_on_sum=tot)), file=sys.stderr)
PY
  )
  echo "== split pick: INLAID_DECODE_SPLIT='$PICK'"
  t=$(date +%s)
  INLAID_QMM_TUNED=1 INLAID_DECODE_SPLIT="$PICK" timeout $((STEPS_S + 50)) python3 bench/engine/bench_decode.py \
    --out "$OUT" --tag "$TAG-attn-steps" --batches 1,2,4,16 --fusions tiles,split --shapes 7b --quants int4 \
    --lora-batch 0 --distinct 1 --ranks 16 --targets qkvo --per-batch-lora 0 --prefill-seqs 0 --cost-points 0 \
    --reps 10 --warmup 2 --fusion-rounds 3 --max-seconds "$STEPS_S" | grep -v '^{'
  echo "== steps: rc $? in $(( $(date +%s) - t )) s"
  LEFT=$(( TOTAL_S - ($(date +%s) - T0) ))
  if [ "$LEFT" -gt 25 ]; then
    t=$(date +%s)
    INLAID_DECODE_SPLIT="$PICK" timeout "$LEFT" python3 -m pytest -q -p no:cacheprovider -rs \
      workers/tests/model/test_decode_fusion.py 2>&1 | tail -n 12 | tee "$OUT/fusion-tests.log"
    echo "== fusion tests: rc $? in $(( $(date +%s) - t )) s"
  else
    echo "== fusion tests skipped: $LEFT s left"
  fi
} 2>&1 | tee "$OUT/at-h200.log"
