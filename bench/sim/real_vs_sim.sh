#!/usr/bin/env bash
# Real gateway + worker on this CPU vs the simulator on the same trace, for inlaid and fifo.
#   bench/sim/real_vs_sim.sh FIXTURE OUTDIR [RATE=4] [DURATION_S=45] [SLO_TTFT_S=1.5] [SLO_TPOT_S=0.1]
# FIXTURE: made by bench/sim/calibrate_cpu.py (model/ + adapters/t0..t3), whose fit is
# libs/sim/calibration/cpu-tiny-measured.json. Needs Postgres, Redis and `npx tsc -b tsconfig.build.json`.
# Env: POLICIES (default "inlaid fifo"), SIM_COST_MODEL (the simulator's cost model, default
# libs/sim/calibration/cpu-tiny-measured.json); INLAID_* settings (e.g. INLAID_COST_MODEL) reach the gateway.
set -euo pipefail
FIX=$1; OUT=$2; RATE=${3:-4}; DUR=${4:-45}; TTFT=${5:-1.5}; TPOT=${6:-0.1}
REPO=$(cd "$(dirname "$0")/../.." && pwd); cd "$REPO"; mkdir -p "$OUT"
POLICIES=${POLICIES:-inlaid fifo}; SIM_COST_MODEL=${SIM_COST_MODEL:-libs/sim/calibration/cpu-tiny-measured.json}
WPORT=50171; HPORT=8191; GPORT=50191
export OMP_NUM_THREADS=1

.venv/bin/python - "$OUT/lengths.json" <<'PY'
import json, random, sys
random.seed(7)
# per task: (prompt median, output median); lognormal spread; prompt + output stays well under 1024 positions
shape = {"t0": (40, 8), "t1": (120, 24), "t2": (60, 64), "t3": (200, 128)}
lengths = {t: [[max(4, min(400, int(random.lognormvariate(0, 0.4) * p))), max(1, min(300, int(random.lognormvariate(0, 0.4) * o)))] for _ in range(200)] for t, (p, o) in shape.items()}
json.dump(lengths, open(sys.argv[1], "w"))
PY
node libs/workload/dist/cli.js --task-lengths "$OUT/lengths.json" --rate "$RATE" --cv 1 --alpha 1 --duration "$DUR" --seed 7 --out "$OUT/trace.jsonl"

# The simulator's trace: prompt lengths as the worker tokenizes loadgen's synthetic prompts.
.venv/bin/python bench/sim/sim_trace.py "$FIX/model" "$OUT/trace.jsonl" "$OUT/trace-sim.jsonl"

.venv/bin/python -m inlaid_worker.server --model "$FIX/model" --adapters-dir "$FIX/adapters" --port $WPORT \
  --kv-cache-bytes $((32 << 20)) --max-num-seqs 64 --max-num-batched-tokens 2048 --prefix-caching off --worker-id bench > "$OUT/worker.log" 2>&1 &
WPID=$!
trap 'kill $WPID 2>/dev/null || true' EXIT
for _ in $(seq 120); do grep -q '"event": *"ready"' "$OUT/worker.log" && break; sleep 1; done
# the worker's context limit, which the simulator applies too (over-long prompts refused, outputs cut at it)
MAXLEN=$(python3 -c 'import json,sys; print(next(json.loads(l)["max_model_len"] for l in open(sys.argv[1]) if l.startswith("{") and "\"ready\"" in l))' "$OUT/worker.log")

for POLICY in $POLICIES; do
  DB="inlaid_bench_sched_${POLICY//-/_}_$$"
  PORT=$HPORT GRPC_PORT=$GPORT WORKER_ADDRS=127.0.0.1:$WPORT DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB \
    INLAID_POLICY=$POLICY INLAID_SLO_TTFT_MS=$(python3 -c "print($TTFT*1000)") INLAID_SLO_TPOT_MS=$(python3 -c "print($TPOT*1000)") \
    INLAID_SCHED_MAX_ROWS=64 node apps/gateway/dist/main.js > "$OUT/gateway-$POLICY.log" 2>&1 &
  GWPID=$!
  for _ in $(seq 60); do curl -sf "http://127.0.0.1:$HPORT/readyz" > /dev/null && break; sleep 0.5; done
  sleep 1
  node libs/loadgen/dist/cli.js --trace "$OUT/trace.jsonl" --url "http://127.0.0.1:$HPORT" --out "$OUT/real-$POLICY.json" \
    --slo-ttft "$TTFT" --slo-tpot "$TPOT" > "$OUT/real-$POLICY.summary.json"
  kill $GWPID; wait $GWPID 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" > /dev/null 2>&1 || true
  node libs/sim/dist/cli.js --trace "$OUT/trace-sim.jsonl" --policy $POLICY --cost-model "$SIM_COST_MODEL" \
    --slo-ttft "$TTFT" --slo-tpot "$TPOT" --max-model-len "$MAXLEN" --requests-out "$OUT/sim-$POLICY.requests.jsonl" --json > "$OUT/sim-$POLICY.json"
done
echo "done: $OUT"
