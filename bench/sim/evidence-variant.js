#!/usr/bin/env node
/**
 * Runs one inlaid variant (e.g. the previous policy version) on exactly the traces of a finished evidence sweep and
 * applies the sweep's goal check to it, with the sweep's own baseline rows: a before/after verdict table on
 * identical traces and an identical high-load definition. Writes <sweep stem>-<label>.json and prints the table.
 * Usage: node bench/sim/evidence-variant.js bench/results/sim-evidence-<date>-<tag>.json --label v3
 *        --inlaid '{"triage":false,"batchedAdmission":{"needRoom":false}}'
 */
'use strict';
const fs = require('node:fs');
const { generateTrace, syntheticProfiles, parseFlags } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, provenance } = require('./common');
const { goalCheck } = require('./evidence-report');
const { scenarioSet } = require('./evidence-scenarios');

const file = process.argv[2];
const flags = parseFlags(process.argv.slice(3), []);
const label = flags.get('label') ?? 'variant';
const inlaid = JSON.parse(flags.get('inlaid') ?? '{}');
const sweep = JSON.parse(fs.readFileSync(file, 'utf8'));
const defs = new Map(scenarioSet(sweep.set).map((sc) => [sc.id, sc]));
const rows = [];
for (const sc of sweep.scenarios) {
  const model = loadModel(sc.model);
  for (const tasks of sweep.tasks) {
    const profiles = syntheticProfiles(tasks, 1, defs.get(sc.id).profiles);
    for (const rate of sc.rates) {
      const trace = generateTrace(profiles, { rate, cv: 2, alpha: 1, durationS: sweep.duration, seed: 1 });
      const { report, stats } = simulate(trace, { scheduler: { policy: 'inlaid', inlaid, defaultSlo: sc.slo }, costModel: model, workers: 1, kvBlocks: sc.kv_blocks, drainS: 600 });
      const base = sweep.rows.find((r) => r.scenario === sc.id && r.tasks === tasks && r.rate === rate && r.policy === 'inlaid');
      rows.push({ ...base, ...report, preemptions: stats.preemptions, mean_batch_rows: stats.meanBatchRows, mean_adapters_per_step: stats.meanAdaptersPerStep });
      process.stderr.write(`${sc.id} tasks ${tasks} rate ${rate}: ${label} slo ${report.slo_attainment.toFixed(3)}\n`);
    }
  }
}
const others = sweep.rows.filter((r) => r.policy !== 'inlaid');
const goal = goalCheck([...rows, ...others], sweep.scenarios);
const out = file.replace(/\.json$/, `-${label}.json`);
fs.writeFileSync(out, JSON.stringify({ ...provenance('evidence-variant.js'), label, inlaid, from: file, goal, rows }, null, 1));
const lines = [`| scenario | tasks | high-load rates | verdict ${label} | verdict ${sweep.tag ?? 'sweep'} |`, '|---|---|---|---|---|'];
for (const g of goal) {
  const now = sweep.goal.find((x) => x.scenario === g.scenario && x.tasks === g.tasks);
  lines.push(`| ${g.scenario} | ${g.tasks} | ${g.points.map((p) => p.rate).join(', ')} | ${g.verdict} | ${now.verdict} |`);
}
console.log(lines.join('\n'));
console.log(out);
