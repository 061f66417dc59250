#!/usr/bin/env node
/**
 * Runs all four policies (and the inlaid ablation) on the same seeded traces at several rates and task
 * counts through the simulator, and writes bench/results/sim-<date>.{md,json}.
 * Usage: npm run build (or npx tsc -b libs/sim) && node bench/sim/compare.js [--duration 300] [--quick] [--tag name]
 * (--tag writes sim-<date>-<tag>.{md,json}, so runs of one day do not overwrite each other)
 * Uses the compiled libraries (libs/workload/dist, libs/sim/dist); single-threaded.
 */
'use strict';
const { generateTrace, syntheticProfiles, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, POLICIES, provenance, writeResult } = require('./common');

const flags = parseFlags(process.argv.slice(2), ['quick']);
const duration = numberFlag(flags, 'duration', 300);
const quick = flags.has('quick');
const tag = flags.get('tag');
const ABLATION = [
  ['inlaid', { policy: 'inlaid' }],
  ['inlaid -grouping', { policy: 'inlaid', inlaid: { grouping: false } }],
  ['inlaid hard beta (no fill)', { policy: 'inlaid', inlaid: { workConserving: false } }],
  ['inlaid fill w/o step budget', { policy: 'inlaid' }, { stepCostHint: false }],
  ['inlaid -prediction (mean)', { policy: 'inlaid', predictor: 'mean' }],
  ['inlaid -prediction (none)', { policy: 'inlaid', predictor: 'none' }],
  ['inlaid -srtf', { policy: 'inlaid', inlaid: { srtf: false } }],
  ['inlaid -memory-aware', { policy: 'inlaid', inlaid: { memoryAware: false } }],
  ['inlaid beta=32', { policy: 'inlaid', inlaid: { beta: 32 } }],
];
const SCENARIOS = [
  { name: 'engine-estimate, H200 KV', model: 'h200-engine-estimate.json', kvBlocks: undefined, rates: [10, 20, 30] },
  { name: 'engine-estimate, tight KV (2000 blocks = 32k tokens, 24 GB-class GPU)', model: 'h200-engine-estimate.json', kvBlocks: 2000, rates: [5, 10, 20] },
  { name: 'peft-placeholder, H200 KV', model: 'h200-peft-placeholder.json', kvBlocks: undefined, rates: [1, 2, 4] },
];
const TASKS = quick ? [10, 100] : [10, 100, 1000];
const FIELDS = ['slo_attainment', 'throughput_tok_s', 'mean_latency_s', 'p50_latency_s', 'p90_latency_s', 'p99_latency_s', 'mean_ttft_s', 'mean_tpot_s', 'jct_s', 'unfinished'];

function run(trace, scheduler, scenario, model, extra = {}) {
  const t0 = process.hrtime.bigint();
  const { report, stats } = simulate(trace, { scheduler, costModel: model, workers: 1, kvBlocks: scenario.kvBlocks, drainS: 600, ...extra });
  return { ...report, preemptions: stats.preemptions, mean_batch_rows: stats.meanBatchRows, mean_adapters_per_step: stats.meanAdaptersPerStep, sim_wall_s: Number(process.hrtime.bigint() - t0) / 1e9 };
}

const rows = [];
for (const sc of SCENARIOS) {
  const model = loadModel(sc.model);
  for (const tasks of TASKS) {
    const profiles = syntheticProfiles(tasks, 1);
    for (const rate of sc.rates) {
      const trace = generateTrace(profiles, { rate, cv: 2, alpha: 1, durationS: duration, seed: 1 });
      const sets = tasks === 100 ? [...POLICIES, ...ABLATION.slice(1)] : POLICIES;
      for (const [label, scheduler, extra] of sets) {
        const r = run(trace, scheduler, sc, model, extra);
        rows.push({ scenario: sc.name, cost_model: model.label, kv_blocks: sc.kvBlocks ?? model.kv_blocks, tasks, rate, requests: trace.length, policy: label, ...r });
        process.stderr.write(`${sc.name} | tasks ${tasks} rate ${rate} ${label}: slo ${r.slo_attainment.toFixed(3)} tok/s ${r.throughput_tok_s.toFixed(0)} (${r.sim_wall_s.toFixed(1)} s)\n`);
      }
    }
  }
}

const fmt = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : 1)) : String(v));
const { command, date: isoDate, machine } = provenance('compare.js');
const date = isoDate.slice(0, 10);
const lines = [
  `# Simulated scheduling comparison (${date})`,
  '',
  `- command: \`${command}\``,
  `- date: ${isoDate}`,
  `- machine (simulation host, not the GPU being modelled): ${machine}`,
  `- traces: Gamma arrivals cv=2, power-law alpha=1, ${duration} s, seed 1, synthetic task profiles (libs/workload), 1 worker`,
  '- SLO: the cost model\'s suggested_slo; unfinished 600 s after the last arrival = missed',
  '- **Cost models are placeholders, not measurements of our worker** (see libs/sim/calibration/README.md).',
  '',
];
for (const sc of SCENARIOS) {
  lines.push(`## ${sc.name}`, '', `| tasks | rate | policy | ${FIELDS.join(' | ')} | batch rows | adapters/step | preempt |`, `|${'---|'.repeat(FIELDS.length + 6)}`);
  for (const r of rows.filter((x) => x.scenario === sc.name)) {
    lines.push(`| ${r.tasks} | ${r.rate} | ${r.policy} | ${FIELDS.map((f) => fmt(r[f])).join(' | ')} | ${fmt(r.mean_batch_rows)} | ${fmt(r.mean_adapters_per_step)} | ${r.preemptions} |`);
  }
  lines.push('');
}
const stem = tag === undefined ? `sim-${date}` : `sim-${date}-${tag}`;
writeResult(`${stem}.json`, { command, date: isoDate, machine, duration, rows });
console.log(writeResult(`${stem}.md`, lines.join('\n')));
