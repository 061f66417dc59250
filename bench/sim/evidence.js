#!/usr/bin/env node
/**
 * Evidence sweep for issue 5: on the same seeded traces, SLO attainment, throughput, latency and JCT of all
 * four policies against request rate for 2, 10, 100 and 1000 tasks, under two cost models (the CPU one
 * MEASURED from the real worker, the H200 one an unmeasured estimate), plus the inlaid ablation at one
 * high-load point per scenario. Writes bench/results/sim-evidence-<date>[-tag].{md,json}; figures come from
 * bench/sim/evidence-figures.js.
 * Usage: npx tsc -b libs/sim && node bench/sim/evidence.js [--duration 300] [--quick] [--tag name]
 * Single-threaded; uses the compiled libraries (libs/workload/dist, libs/sim/dist).
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { generateTrace, syntheticProfiles, DEFAULT_PROFILE_OPTIONS, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { root, loadModel, POLICIES } = require('./common');
const { renderMarkdown, goalCheck } = require('./evidence-report');

const flags = parseFlags(process.argv.slice(2), ['quick']);
const duration = numberFlag(flags, 'duration', 300);
const quick = flags.has('quick');
const tag = flags.get('tag');
const ABLATION = [
  ['inlaid (full)', { policy: 'inlaid' }],
  ['-grouping', { policy: 'inlaid', inlaid: { grouping: false } }],
  ['-prediction (no predictor)', { policy: 'inlaid', predictor: 'none' }],
  ['-prediction (per-task mean)', { policy: 'inlaid', predictor: 'mean' }],
  ['-srtf (arrival order)', { policy: 'inlaid', inlaid: { srtf: false } }],
  ['fifo (reference)', { policy: 'fifo' }],
];
/** Lengths for the tiny CPU model: its 1024 positions and the calibration's range (prompts 16-192, 1-32 rows). */
const CPU_PROFILES = { ...DEFAULT_PROFILE_OPTIONS, promptMedian: [16, 256], outputMedian: [8, 128], maxPrompt: 512, maxOutput: 256 };
const SCENARIOS = [
  {
    id: 'cpu-measured',
    name: 'CPU cost model, MEASURED (cpu-tiny-measured.json), the real worker\'s 512 KV blocks',
    model: 'cpu-tiny-measured.json',
    kvBlocks: undefined,
    profiles: CPU_PROFILES,
    slo: { ttftS: 1.5, tpotS: 0.1 },
    rates: [1, 2, 3, 3.5, 4, 5, 6],
    ablation: { tasks: 100, rate: 4 },
  },
  {
    id: 'h200-estimate-tight-kv',
    name: 'H200 engine ESTIMATE (h200-engine-estimate.json, NOT measured), tight KV 2000 blocks = 32k tokens',
    model: 'h200-engine-estimate.json',
    kvBlocks: 2000,
    profiles: DEFAULT_PROFILE_OPTIONS,
    slo: undefined,
    rates: [5, 10, 15, 20, 25, 30, 40],
    ablation: { tasks: 100, rate: 20 },
  },
  {
    id: 'h200-estimate-full-kv',
    name: 'H200 engine ESTIMATE (NOT measured), full H200 KV 13400 blocks (control: memory does not bind)',
    model: 'h200-engine-estimate.json',
    kvBlocks: undefined,
    profiles: DEFAULT_PROFILE_OPTIONS,
    slo: undefined,
    rates: [10, 15, 20, 25, 30, 40],
    ablation: { tasks: 100, rate: 20 },
  },
];
const TASKS = quick ? [10, 100] : [2, 10, 100, 1000];

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

const date = new Date().toISOString().slice(0, 10);
const command = `node bench/sim/evidence.js ${process.argv.slice(2).join(' ')}`.trim();
const machine = `${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}, node ${process.version}`;
const scenarios = SCENARIOS.map(({ id, name, model, rates, ablation: ab, resolved }) => ({ id, name, model, rates, ablation: ab, ...resolved }));
const goal = goalCheck(rows, scenarios);
const meta = { command, date: new Date().toISOString(), machine, duration, tasks: TASKS, scenarios };
const outDir = path.join(root, 'bench', 'results');
fs.mkdirSync(outDir, { recursive: true });
const stem = tag === undefined ? `sim-evidence-${date}` : `sim-evidence-${date}-${tag}`;
fs.writeFileSync(path.join(outDir, `${stem}.md`), renderMarkdown(meta, rows, ablation, goal));
fs.writeFileSync(path.join(outDir, `${stem}.json`), JSON.stringify({ ...meta, goal, rows, ablation }, null, 1));
console.log(path.join(outDir, `${stem}.md`));
