#!/usr/bin/env bash
# Re-simulates the B traces of a finished real_vs_sim_fit.sh result (its summary JSON, e.g. sched-real-v5) with that
# result's fit A, without and with the worker's context limit, and prints the error table against the real runs
# recorded in the JSON (no real run is made). The traces are regenerated (same lengths and seeds as
# real_vs_sim_fit.sh), so the simulator sees exactly the requests the real stack was sent.
#   bench/sim/real_vs_sim_resim.sh FIXTURE RESULT.json OUTDIR [MAX_MODEL_LEN=1024]
# RESULT.json: bench/results/sched-real-v5-2026-11-29.json (its "final" part) or a summary.json of the bench.
set -euo pipefail
FIX=$1; RES=$2; OUT=$3; MAXLEN=${4:-1024}
REPO=$(cd "$(dirname "$0")/../.." && pwd); cd "$REPO"; mkdir -p "$OUT"
RATES=${RATES:-10 20}; DUR=${DUR:-30}; POLICIES=${POLICIES:-inlaid fifo fcfs-maxloras}; TTFT=${TTFT:-1.5}; TPOT=${TPOT:-0.1}
node -e 'const r=require(process.argv[1]); const s=r.final ?? r; require("fs").writeFileSync(process.argv[2], JSON.stringify(s.fit_A));' "$(realpath "$RES")" "$OUT/fit-A.json"
# the lengths of real_vs_sim_fit.sh (same code, same seed)
sed -n "/^\.venv\/bin\/python - \"\$OUT\/lengths.json\" <<'PY'$/,/^PY$/p" bench/sim/real_vs_sim_fit.sh | sed '1d;$d' > "$OUT/lengths.py"
.venv/bin/python "$OUT/lengths.py" "$OUT/lengths.json"
for R in $RATES; do
  node libs/workload/dist/cli.js --task-lengths "$OUT/lengths.json" --rate "$R" --cv 1 --alpha 1 --duration "$DUR" --seed 7 --out "$OUT/trace-B$R.jsonl" > /dev/null
  .venv/bin/python bench/sim/sim_trace.py "$FIX/model" "$OUT/trace-B$R.jsonl" "$OUT/trace-B$R-sim.jsonl" 2> /dev/null
  for P in $POLICIES; do
    for V in before after; do
      LIMIT=(); [ "$V" = after ] && LIMIT=(--max-model-len "$MAXLEN")
      node libs/sim/dist/cli.js --trace "$OUT/trace-B$R-sim.jsonl" --policy "$P" --cost-model "$OUT/fit-A.json" --slo-ttft "$TTFT" --slo-tpot "$TPOT" \
        "${LIMIT[@]}" --requests-out "$OUT/sim-B$R-$P-$V.requests.jsonl" --json > "$OUT/sim-B$R-$P-$V.json"
    done
  done
done
node - "$(realpath "$RES")" "$OUT" $RATES <<'JS'
const [res, out, ...rates] = process.argv.slice(2);
const r = require(res); const s = r.final ?? r;
const pct = (v) => `${v >= 0 ? '+' : '−'}${Math.abs(100 * v).toFixed(0)}%`;
const rows = ['| B rate, policy | simulator | tok/s sim (real) err | mean TTFT s sim (real) err | mean TPOT s sim (real) err | SLO sim (real) points | steps sim (worker engine steps) |', '|---|---|---|---|---|---|---|'];
const table = {};
for (const rate of rates) for (const [p, v] of Object.entries(s.rates[rate] ?? {})) {
  if (p.includes('+')) continue;
  const real = v.real;
  const eng = Number((/engine steps (\d+)/.exec(v.worker ?? '') ?? [])[1]);
  for (const V of ['before', 'after']) {
    const sim = require(`${out}/sim-B${rate}-${p}-${V}.json`);
    const e = (a, b) => (a - b) / b;
    table[`${rate}/${p}/${V}`] = { throughput: e(sim.throughput_tok_s, real.throughput_tok_s), ttft: e(sim.mean_ttft_s, real.ttft_s.mean), tpot: e(sim.mean_tpot_s, real.tpot_s.mean), slo_points: 100 * (sim.slo_attainment - real.slo_attainment), sim_steps: sim.steps, engine_steps: eng };
    rows.push(`| ${rate}, ${p} | ${V === 'before' ? 'before (no context limit)' : `after (--max-model-len ${sim.max_model_len})`} | ${sim.throughput_tok_s.toFixed(1)} (${real.throughput_tok_s.toFixed(1)}) ${pct(e(sim.throughput_tok_s, real.throughput_tok_s))} | ${sim.mean_ttft_s.toFixed(2)} (${real.ttft_s.mean.toFixed(2)}) ${pct(e(sim.mean_ttft_s, real.ttft_s.mean))} | ${sim.mean_tpot_s.toFixed(3)} (${real.tpot_s.mean.toFixed(3)}) ${pct(e(sim.mean_tpot_s, real.tpot_s.mean))} | ${(100 * sim.slo_attainment).toFixed(1)}% (${(100 * real.slo_attainment).toFixed(1)}%) ${(100 * (sim.slo_attainment - real.slo_attainment)).toFixed(1)} | ${sim.steps} (${eng}) |`);
  }
}
require('fs').writeFileSync(`${out}/resim.json`, JSON.stringify(table, null, 1) + '\n');
console.log(rows.join('\n'));
JS
