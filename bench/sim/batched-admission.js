#!/usr/bin/env node
/**
 * Batched prefill admission on the measured H200 cost model: inlaid with the batch gate (its default on a model
 * with a fixed prefill-step cost) and without it, next to the baselines, at the high-load rates of the evidence
 * sweep (the same seeded traces as bench/sim/evidence.js --set h200). Prints Markdown tables; writes the rows to
 * bench/results/sim-batched-admission-<date>.json.
 * Usage: npx tsc -b libs/sim && node bench/sim/batched-admission.js [--tasks 100,1000] [--duration 300]
 *        [--evidence bench/results/sim-evidence-2026-11-29-h200.json]   (rates and scenarios are read from it)
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { generateTrace, syntheticProfiles, DEFAULT_PROFILE_OPTIONS, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { root, loadModel, provenance, writeResult } = require('./common');

const flags = parseFlags(process.argv.slice(2), []);
const duration = numberFlag(flags, 'duration', 300);
const TASKS = (flags.get('tasks') ?? '100,1000').split(',').map(Number);
const evidence = JSON.parse(fs.readFileSync(path.resolve(root, flags.get('evidence') ?? 'bench/results/sim-evidence-2026-11-29-h200.json'), 'utf8'));
const HIGH_LOAD = 0.9; // multiples of the saturated rate counted as high load (as in the evidence sweep)
const POLICIES = [
  ['inlaid (batched)', { policy: 'inlaid' }],
  ['inlaid (no batching)', { policy: 'inlaid', inlaid: { batchedAdmission: { mode: 'off' } } }],
  ['fifo', { policy: 'fifo' }],
  ['fcfs-maxloras', { policy: 'fcfs-maxloras', maxLoras: 4 }],
  ['mlfq', { policy: 'mlfq' }],
];

const rows = [];
for (const sc of evidence.scenarios.filter((s) => s.id.startsWith('h200-measured'))) {
  const model = loadModel(sc.model);
  const rates = sc.rates.filter((r) => r >= HIGH_LOAD * sc.auto_rates.rate - 1e-9);
  for (const tasks of TASKS) {
    const profiles = syntheticProfiles(tasks, 1, DEFAULT_PROFILE_OPTIONS);
    for (const rate of rates) {
      const trace = generateTrace(profiles, { rate, cv: 2, alpha: 1, durationS: duration, seed: 1 });
      for (const [label, scheduler] of POLICIES) {
        const { report: r, stats } = simulate(trace, { scheduler, costModel: model, workers: 1, kvBlocks: sc.kv_blocks, drainS: 600 });
        rows.push({ scenario: sc.id, kv_blocks: sc.kv_blocks, tasks, rate, load: rate / sc.auto_rates.rate, policy: label, slo_attainment: r.slo_attainment, throughput_tok_s: r.throughput_tok_s, mean_ttft_s: r.mean_ttft_s, mean_tpot_s: r.mean_tpot_s, steps: stats.steps, mean_batch_rows: stats.meanBatchRows });
        process.stderr.write(`${sc.id} tasks ${tasks} rate ${rate} ${label}: slo ${r.slo_attainment.toFixed(3)} tok/s ${r.throughput_tok_s.toFixed(0)}\n`);
      }
    }
  }
}

const f3 = (v) => v.toFixed(3);
const out = [];
for (const sc of [...new Set(rows.map((r) => r.scenario))]) {
  for (const tasks of TASKS) {
    const sub = rows.filter((r) => r.scenario === sc && r.tasks === tasks);
    out.push(`\n### ${sc}, ${tasks} tasks (KV ${sub[0].kv_blocks} blocks)\n`);
    out.push(`| rate (load) | ${POLICIES.map(([l]) => `${l} SLO / tok/s`).join(' | ')} | batched ÷ fifo, ÷ fcfs-maxloras (SLO); tok/s vs best baseline | goal |`);
    out.push(`|---|${POLICIES.map(() => '---').join('|')}|---|---|`);
    for (const rate of [...new Set(sub.map((r) => r.rate))]) {
      const at = (p) => sub.find((r) => r.rate === rate && r.policy === p);
      const b = at('inlaid (batched)');
      const fifo = at('fifo');
      const fcfs = at('fcfs-maxloras');
      const tp = b.throughput_tok_s / Math.max(fifo.throughput_tok_s, fcfs.throughput_tok_s);
      const met = b.slo_attainment >= 2 * fifo.slo_attainment && b.slo_attainment >= 2 * fcfs.slo_attainment && tp >= 0.99;
      const cells = POLICIES.map(([l]) => `${f3(at(l).slo_attainment)} / ${at(l).throughput_tok_s.toFixed(0)}`);
      out.push(`| ${rate} (${b.load.toFixed(2)}) | ${cells.join(' | ')} | ${(b.slo_attainment / fifo.slo_attainment).toFixed(2)}x, ${(b.slo_attainment / fcfs.slo_attainment).toFixed(2)}x; ${(100 * tp).toFixed(0)}% | ${met ? '**met**' : 'not met'} |`);
    }
  }
}
console.log(out.join('\n'));
const { command, date, machine } = provenance('batched-admission.js');
process.stderr.write(`${writeResult(`sim-batched-admission-${date.slice(0, 10)}.json`, { command, date, machine, duration, tasks: TASKS, rows })}\n`);
