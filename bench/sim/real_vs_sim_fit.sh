#!/usr/bin/env bash
# Held-out honesty check of the simulator with a cost model fitted from the gateway's own served steps.
#   bench/sim/real_vs_sim_fit.sh FIXTURE OUTDIR
# 1. Trace A (calibration; FIT_RATE req/s, seed FIT_SEED) is served by the real stack (gateway + gRPC worker
#    + Postgres + libs/loadgen) once per policy in FIT_POLICIES with INLAID_COST_FIT=measure; each gateway's
#    served-step fit (GET /dashboard/api/cost-model?points=1) is saved, and the pooled steps are fitted into
#    OUTDIR/fit-A.json (bench/sim/real_vs_sim_fit.mjs).
# 2. Traces B (RATES req/s, seed 7: the traces of sched-real-v4) are served with every policy in POLICIES,
#    the gateway planning with GW_COST_FIT (default online) and INLAID_COST_MODEL=fit-A.json as its prior;
#    each gateway's own fit is saved too (fit-B-POLICY.json, for drift).
# 3. The simulator runs every B trace and policy with fit-A.json (sim-POLICY.json), with the A fit of the same
#    policy (sim-POLICY-fit-A-same-policy.json), with the gateway's own fit
#    of that run (sim-POLICY-own.json: in-sample, separates drift of the machine from model error) and with
#    EXTRA_MODELS (sim-POLICY-LABEL.json). /proc/loadavg is recorded before and after every real run (load-*.txt).
#    Every simulation applies the worker's context limit (--max-model-len, read from the worker's ready line): the
#    prompts the worker refuses are refused, outputs stop at the limit. sim-POLICY-no-context-limit.json is fit A
#    without it (the simulator before sched-real-v6). Each simulation also writes its per-request lines
#    (sim-*.requests.jsonl; bench/sim/real_vs_sim_requests.mjs compares them with the load client's real-POLICY.json).
# 4. STATIC_MODELS (optional): for each rate, inlaid is served once more per file, planning with that file
#    (INLAID_COST_FIT=measure), to compare the online fit with a fixed cost model (real-inlaid+static-LABEL.*);
#    PLAN_QUANTILES (optional): once more per quantile Q, online with INLAID_COST_FIT_PLAN_QUANTILE=Q.
# OUTDIR/summary.json collects everything (bench/sim/real_vs_sim_fit.mjs collect).
# FIXTURE: made by bench/sim/calibrate_cpu.py. Needs Postgres and `npx tsc -b tsconfig.build.json`.
# Ports: WPORT, HPORT, GPORT, MPORT (defaults below) so that two copies can run side by side.
set -euo pipefail
FIX=$1; OUT=$2
REPO=$(cd "$(dirname "$0")/../.." && pwd); cd "$REPO"; mkdir -p "$OUT"
FIT_RATE=${FIT_RATE:-15}; FIT_SEED=${FIT_SEED:-11}; FIT_DUR=${FIT_DUR:-30}; FIT_POLICIES=${FIT_POLICIES:-inlaid fifo fcfs-maxloras}
RATES=${RATES:-10 20}; DUR=${DUR:-30}; POLICIES=${POLICIES:-inlaid fifo fcfs-maxloras}
TTFT=${TTFT:-1.5}; TPOT=${TPOT:-0.1}; GW_COST_FIT=${GW_COST_FIT:-online}
EXTRA_MODELS=${EXTRA_MODELS-libs/sim/calibration/cpu-tiny-quiet.json libs/sim/calibration/cpu-tiny-measured.json}
WPORT=${WPORT:-50171}; HPORT=${HPORT:-8191}; GPORT=${GPORT:-50191}; MPORT=${MPORT:-9171}
export OMP_NUM_THREADS=1
load() { echo "$(cat /proc/loadavg) ($(date -u +%H:%M:%S))"; }
# the worker's own counters (Prometheus /metrics): engine steps, engine step seconds, preemptions
wmetrics() { curl -sf "http://127.0.0.1:$MPORT/metrics" | awk '/^inlaid_worker_steps_total /{s=$2} /^inlaid_worker_step_seconds_sum /{t=$2} /^inlaid_worker_preemptions_total /{p=$2} END {print s+0, t+0, p+0}'; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }

.venv/bin/python - "$OUT/lengths.json" <<'PY'
import json, random, sys
random.seed(7)
# per task: (prompt median, output median); lognormal spread (as bench/sim/real_vs_sim.sh)
shape = {"t0": (40, 8), "t1": (120, 24), "t2": (60, 64), "t3": (200, 128)}
lengths = {t: [[max(4, min(400, int(random.lognormvariate(0, 0.4) * p))), max(1, min(300, int(random.lognormvariate(0, 0.4) * o)))] for _ in range(200)] for t, (p, o) in shape.items()}
json.dump(lengths, open(sys.argv[1], "w"))
PY
mk_trace() { # NAME RATE SEED DUR
  node libs/workload/dist/cli.js --task-lengths "$OUT/lengths.json" --rate "$2" --cv 1 --alpha 1 --duration "$4" --seed "$3" --out "$OUT/$1.jsonl"
  .venv/bin/python bench/sim/sim_trace.py "$FIX/model" "$OUT/$1.jsonl" "$OUT/$1-sim.jsonl"
}
mk_trace trace-A "$FIT_RATE" "$FIT_SEED" "$FIT_DUR"
for R in $RATES; do mk_trace "trace-B$R" "$R" 7 "$DUR"; done

.venv/bin/python -m inlaid_worker.server --model "$FIX/model" --adapters-dir "$FIX/adapters" --port $WPORT \
  --kv-cache-bytes $((32 << 20)) --max-num-seqs 64 --max-num-batched-tokens 2048 --worker-id bench --metrics-port $MPORT > "$OUT/worker.log" 2>&1 &
WPID=$!
trap 'kill $WPID 2>/dev/null || true' EXIT
for _ in $(seq 120); do grep -q '"event": *"ready"' "$OUT/worker.log" && break; sleep 1; done
# the worker's context limit (prompt + output tokens), which the simulator applies too
MAXLEN=$(python3 -c 'import json,sys; print(next(json.loads(l)["max_model_len"] for l in open(sys.argv[1]) if l.startswith("{") and "\"ready\"" in l))' "$OUT/worker.log")
echo "worker max_model_len $MAXLEN" > "$OUT/max-model-len.txt"

serve() { # TRACE POLICY TAG COST_FIT [COST_MODEL]
  local DB; DB=$(echo "inlaid_bench_fit_${3//[^a-zA-Z0-9]/_}_$$" | tr A-Z a-z)
  load > "$OUT/load-before-$3.txt"
  env PORT=$HPORT GRPC_PORT=$GPORT WORKER_ADDRS=127.0.0.1:$WPORT DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB \
    INLAID_POLICY=$2 INLAID_SLO_TTFT_MS=$(python3 -c "print($TTFT*1000)") INLAID_SLO_TPOT_MS=$(python3 -c "print($TPOT*1000)") \
    INLAID_SCHED_MAX_ROWS=64 INLAID_COST_FIT=$4 INLAID_COST_FIT_MIN_STEPS=${MIN_STEPS:-200} ${5:+INLAID_COST_MODEL=$5} \
    ${INLAID_COST_FIT_PLAN_QUANTILE:+INLAID_COST_FIT_PLAN_QUANTILE=$INLAID_COST_FIT_PLAN_QUANTILE} \
    node apps/gateway/dist/main.js > "$OUT/gateway-$3.log" 2>&1 &
  local GWPID=$!
  for _ in $(seq 60); do curl -sf "http://127.0.0.1:$HPORT/readyz" > /dev/null && break; sleep 0.5; done
  sleep 1
  local G0 W0 T0 M0; G0=$(cpu_s $GWPID); W0=$(cpu_s $WPID); T0=$(date +%s.%N); M0=$(wmetrics)
  node libs/loadgen/dist/cli.js --trace "$OUT/$1.jsonl" --url "http://127.0.0.1:$HPORT" --out "$OUT/real-$3.json" \
    --slo-ttft "$TTFT" --slo-tpot "$TPOT" > "$OUT/real-$3.summary.json"
  curl -sf "http://127.0.0.1:$HPORT/dashboard/api/cost-model?points=1" > "$OUT/fit-$3.json" || echo "no fit for $3" >&2
  # CPU seconds used by the gateway and the worker during the run, and its wall time
  python3 -c "import sys; g0,g1,w0,w1,t0,t1=map(float,sys.argv[1:]); print(f'gateway {g1-g0:.1f} s, worker {w1-w0:.1f} s CPU in {t1-t0:.1f} s')" \
    "$G0" "$(cpu_s $GWPID)" "$W0" "$(cpu_s $WPID)" "$T0" "$(date +%s.%N)" > "$OUT/cpu-$3.txt"
  python3 -c "import sys; a=list(map(float,sys.argv[1:4])); b=list(map(float,sys.argv[4:7])); print(f'engine steps {b[0]-a[0]:.0f}, engine step time {b[1]-a[1]:.2f} s, preemptions {b[2]-a[2]:.0f}')" $M0 $(wmetrics) > "$OUT/worker-$3.txt"
  kill $GWPID; wait $GWPID 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" > /dev/null 2>&1 || true
  load > "$OUT/load-after-$3.txt"
}

A_FITS=()
for P in $FIT_POLICIES; do serve trace-A "$P" "A-$P" measure; A_FITS+=("$OUT/fit-A-$P.json"); done
node bench/sim/real_vs_sim_fit.mjs pool "$OUT/fit-A.json" "${A_FITS[@]}"

sim() { # TRACE POLICY MODEL OUTFILE [no-limit]
  local LIMIT=(--max-model-len "$MAXLEN"); [ -n "${5:-}" ] && LIMIT=()
  node libs/sim/dist/cli.js --trace "$OUT/$1-sim.jsonl" --policy "$2" --cost-model "$3" --slo-ttft "$TTFT" --slo-tpot "$TPOT" \
    "${LIMIT[@]}" --requests-out "${4%.json}.requests.jsonl" --json > "$4"
}
settle() { # RATE TAG: moves a B run's files into OUT/B<rate>/
  for f in real-B$1-$2.json real-B$1-$2.summary.json fit-B$1-$2.json load-before-B$1-$2.txt load-after-B$1-$2.txt gateway-B$1-$2.log cpu-B$1-$2.txt worker-B$1-$2.txt; do
    [ -f "$OUT/$f" ] && mv "$OUT/$f" "$OUT/B$1/${f/B$1-/}"
  done
}
for R in $RATES; do
  mkdir -p "$OUT/B$R"
  for P in $POLICIES; do
    serve "trace-B$R" "$P" "B$R-$P" "$GW_COST_FIT" "$OUT/fit-A.json"
    settle "$R" "$P"
    sim "trace-B$R" "$P" "$OUT/fit-A.json" "$OUT/B$R/sim-$P.json"
    sim "trace-B$R" "$P" "$OUT/fit-A.json" "$OUT/B$R/sim-$P-no-context-limit.json" no-limit
    if [ -s "$OUT/B$R/fit-$P.json" ]; then sim "trace-B$R" "$P" "$OUT/B$R/fit-$P.json" "$OUT/B$R/sim-$P-own.json"; fi
    if [ -s "$OUT/fit-A-$P.json" ]; then sim "trace-B$R" "$P" "$OUT/fit-A-$P.json" "$OUT/B$R/sim-$P-fit-A-same-policy.json"; fi
    for M in $EXTRA_MODELS; do sim "trace-B$R" "$P" "$M" "$OUT/B$R/sim-$P-$(basename "$M" .json).json"; done
  done
  # inlaid variants on the same trace, right after: planning with a fixed file, or with a quantile of the online fit
  for M in ${STATIC_MODELS:-}; do
    T="inlaid+static-$(basename "$M" .json)"
    serve "trace-B$R" inlaid "B$R-$T" measure "$M"
    settle "$R" "$T"
  done
  for Q in ${PLAN_QUANTILES:-}; do
    T="inlaid+online-q$Q"
    INLAID_COST_FIT_PLAN_QUANTILE=$Q serve "trace-B$R" inlaid "B$R-$T" online "$OUT/fit-A.json"
    settle "$R" "$T"
  done
done
node bench/sim/real_vs_sim_fit.mjs collect "$OUT/summary.json" "$OUT"
echo "done: $OUT"
