#!/usr/bin/env node
/**
 * Evidence sweep for issue 5: on the same seeded traces, SLO attainment, throughput, latency and JCT of all
 * four policies against request rate for 2, 10, 100 and 1000 tasks, under two cost models (the CPU one
 * MEASURED from the real worker, the H200 one an unmeasured estimate), plus the inlaid ablation at one
 * high-load point per scenario. Writes bench/results/sim-evidence-<date>[-tag].{md,json}; figures come from
 * bench/sim/evidence-figures.js.
 * Usage: npx tsc -b libs/sim && node bench/sim/evidence.js [--duration 300] [--quick] [--tag name]
 *        [--set default|h200|cpu] [--model FILE]   (scenario sets: bench/sim/evidence-scenarios.js; --model: the
 *        H200 calibration of --set h200, the CPU calibration of --set cpu)
 * Single-threaded; uses the compiled libraries (libs/workload/dist, libs/sim/dist).
 */
'use strict';
const { generateTrace, syntheticProfiles, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, POLICIES, provenance, writeResult } = require('./common');
const { renderMarkdown, goalCheck } = require('./evidence-report');
const { scenarioSet, AUTO_LOADS, round2 } = require('./evidence-scenarios');

const flags = parseFlags(process.argv.slice(2), ['quick']);
const duration = numberFlag(flags, 'duration', 300);
const quick = flags.has('quick');
const tag = flags.get('tag');
const setName = flags.get('set') ?? 'default';
const ABLATION = [
  ['inlaid (full)', { policy: 'inlaid' }],
  ['-triage', { policy: 'inlaid', inlaid: { triage: false } }],
  ['-batch room rule', { policy: 'inlaid', inlaid: { batchedAdmission: { needRoom: false } } }],
  ['-budget in the batch room rule (budgetRoom off, before s9b)', { policy: 'inlaid', inlaid: { batchedAdmission: { budgetRoom: false } } }],
  ['fixed prefill in step budget: on (default auto = on when prefillStepS <= 0.4 x TPOT)', { policy: 'inlaid', inlaid: { budgetFixedPrefill: true } }],
  ['fixed prefill in step budget: off', { policy: 'inlaid', inlaid: { budgetFixedPrefill: false } }],
  ['v5 batch spacing (fixedShare 0.25)', { policy: 'inlaid', inlaid: { batchedAdmission: { fixedShare: 0.25 } } }],
  ['+lost work uses banked slack (lostSlack, off)', { policy: 'inlaid', inlaid: { lostSlack: true } }],
  ['v7 profile (budgetSafety 1, beta 3, lost-row KV reserve 0.1)', { policy: 'inlaid', inlaid: { budgetSafety: 1, beta: 3, lostReserveQuantile: 0.1 } }],
  ['+lost-row KV reserve (lostReserveQuantile 0.1)', { policy: 'inlaid', inlaid: { lostReserveQuantile: 0.1 } }],
  ['v3 policy (triage, room rule off)', { policy: 'inlaid', inlaid: { triage: false, batchedAdmission: { needRoom: false } } }],
  ['-grouping', { policy: 'inlaid', inlaid: { grouping: false } }],
  ['-prediction (no predictor)', { policy: 'inlaid', predictor: 'none' }],
  ['-prediction (per-task mean)', { policy: 'inlaid', predictor: 'mean' }],
  ['-srtf (arrival order)', { policy: 'inlaid', inlaid: { srtf: false } }],
  ['-slo step budget', { policy: 'inlaid', inlaid: { stepBudget: false } }],
  ['-lenient starvation (strict pause)', { policy: 'inlaid', inlaid: { lenientStarvation: false } }],
  ['-batched admission', { policy: 'inlaid', inlaid: { batchedAdmission: { mode: 'off' } } }],
  ['reserve the median (q 0.5)', { policy: 'inlaid', inlaid: { reserveQuantile: 0.5 } }],
  ['first version (budget, lenient starvation, batching, triage off; median)', { policy: 'inlaid', inlaid: { stepBudget: false, lenientStarvation: false, reserveQuantile: 0.5, triage: false, batchedAdmission: { mode: 'off' } } }],
  ['fifo (reference)', { policy: 'fifo' }],
];
const SCENARIOS = scenarioSet(setName, flags.get('model'));
const TASKS = quick ? [10, 100] : [2, 10, 100, 1000];

/** Saturated request rate of a model: fifo, 100 tasks, doubling the rate until it serves < 90% of the offer. */
function saturatedRate(sc, model) {
  const profiles = syntheticProfiles(100, 1, sc.profiles);
  for (let rate = 2; rate < 1e5; rate *= 2) {
    const trace = generateTrace(profiles, { rate, cv: 2, alpha: 1, durationS: 120, seed: 1 });
    const r = run(trace, { policy: 'fifo' }, sc, model);
    const offered = trace.reduce((a, x) => a + x.output_tokens, 0) / 120;
    if (r.throughput_tok_s < 0.9 * offered) {
      const meanOut = (offered * 120) / trace.length;
      return { rate: r.throughput_tok_s / meanOut, probe_rate: rate, saturated_tok_s: r.throughput_tok_s, mean_output_tokens: meanOut };
    }
  }
  throw new Error(`${sc.id}: no saturation found`);
}

function run(trace, scheduler, sc, model) {
  const t0 = process.hrtime.bigint();
  const sched = sc.slo === undefined ? scheduler : { ...scheduler, defaultSlo: sc.slo };
  const { report, stats } = simulate(trace, { scheduler: sched, costModel: model, workers: 1, kvBlocks: sc.kvBlocks, drainS: 600 });
  return {
    ...report,
    preemptions: stats.preemptions,
    mean_batch_rows: stats.meanBatchRows,
    mean_adapters_per_step: stats.meanAdaptersPerStep,
    sim_wall_s: Number(process.hrtime.bigint() - t0) / 1e9,
  };
}

const offeredTokS = (trace) => trace.reduce((a, r) => a + r.output_tokens, 0) / duration;

const rows = [];
const ablation = [];
for (const sc of SCENARIOS) {
  const model = loadModel(sc.model);
  const slo = sc.slo ?? { ttftS: model.suggested_slo.ttft_s, tpotS: model.suggested_slo.tpot_s };
  sc.resolved = { label: model.label, placeholder: model.placeholder, kv_blocks: sc.kvBlocks ?? model.kv_blocks, slo };
  if (sc.rates === 'auto') {
    const sat = saturatedRate(sc, model);
    sc.rates = [...new Set(AUTO_LOADS.map((l) => round2(l * sat.rate)))];
    sc.resolved.auto_rates = { ...sat, loads: AUTO_LOADS };
    // Nominal load of each rate (the first load that rounds to it), for the high-load definition of the goal check.
    sc.resolved.rate_loads = {};
    for (const l of AUTO_LOADS) sc.resolved.rate_loads[round2(l * sat.rate)] ??= l;
    process.stderr.write(`${sc.id}: saturated at ${sat.rate.toFixed(2)} req/s (${sat.saturated_tok_s.toFixed(0)} tok/s); rates ${sc.rates.join(', ')}\n`);
  }
  if (sc.ablation.rate === undefined) {
    const want = sc.ablation.load * sc.resolved.auto_rates.rate;
    sc.ablation = { tasks: sc.ablation.tasks, rate: sc.rates.reduce((a, r) => (Math.abs(r - want) < Math.abs(a - want) ? r : a)) };
  }
  for (const tasks of TASKS) {
    const profiles = syntheticProfiles(tasks, 1, sc.profiles);
    for (const rate of sc.rates) {
      const trace = generateTrace(profiles, { rate, cv: 2, alpha: 1, durationS: duration, seed: 1 });
      const base = { scenario: sc.id, cost_model: model.label, measured: !model.placeholder, kv_blocks: sc.resolved.kv_blocks, tasks, rate, requests: trace.length, offered_tok_s: offeredTokS(trace) };
      for (const [label, scheduler] of POLICIES) {
        const r = run(trace, scheduler, sc, model);
        rows.push({ ...base, policy: label, ...r });
        process.stderr.write(`${sc.id} | tasks ${tasks} rate ${rate} ${label}: slo ${r.slo_attainment.toFixed(3)} tok/s ${r.throughput_tok_s.toFixed(0)} (${r.sim_wall_s.toFixed(1)} s)\n`);
      }
      if (tasks === sc.ablation.tasks && rate === sc.ablation.rate) {
        for (const [label, scheduler] of ABLATION) {
          const r = run(trace, scheduler, sc, model);
          ablation.push({ ...base, variant: label, ...r });
          process.stderr.write(`${sc.id} ablation ${label}: slo ${r.slo_attainment.toFixed(3)}\n`);
        }
      }
    }
  }
}

const { command, date, machine } = provenance('evidence.js');
const scenarios = SCENARIOS.map(({ id, name, model, rates, ablation: ab, resolved }) => ({ id, name, model, rates, ablation: ab, ...resolved }));
const models = Object.fromEntries([...new Set(SCENARIOS.map((sc) => sc.model))].map((f) => [f, ((m) => ({ label: m.label, placeholder: m.placeholder, source: m.source, fit_error: m.fit_error }))(loadModel(f))]));
const goal = goalCheck(rows, scenarios);
const meta = { command, date, machine, duration, tasks: TASKS, set: setName, tag, scenarios, models };
const stem = tag === undefined ? `sim-evidence-${date.slice(0, 10)}` : `sim-evidence-${date.slice(0, 10)}-${tag}`;
writeResult(`${stem}.json`, { ...meta, goal, rows, ablation });
console.log(writeResult(`${stem}.md`, renderMarkdown(meta, rows, ablation, goal)));
