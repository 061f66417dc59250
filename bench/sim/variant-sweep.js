#!/usr/bin/env node
/**
 * Inlaid variants against the baselines on several seeds, at loads relative to each scenario's saturated rate.
 * For each (scenario, tasks, load, seed) trace: SLO attainment and throughput of fifo, fcfs-maxloras and each
 * inlaid variant; per variant the goal count (>= 2x both baselines' SLO, throughput >= 99% of the better) and
 * the mean SLO. Baseline runs are cached in --cache (JSON) so adding a variant re-runs only that variant.
 * Usage: npx tsc -b libs/sim && nice node bench/sim/variant-sweep.js --variants 'name={"triage":true};...'
 *        [--scenarios full,scarce] [--tasks 10,100,1000] [--loads 1,1.25,1.5,1.75,2] [--seeds 1,2,3]
 *        [--duration 300] [--cache /tmp/variant-sweep-cache.json] [--out rows.json]
 *        [--cpu-model cpu-tiny-measured-s7.json --cpu-sat-rate R]   (the cpu scenario with another calibration and
 *        its saturated rate; the cache keys of such runs carry the model's name)
 *        [--h200-model h200-served-s8.json --full-sat-rate R --scarce-sat-rate R]   (the same for the full and scarce
 *        KV scenarios: another H200 calibration and fifo's saturated rates on it, 100 tasks)
 * A variant is name=JSON of inlaid options (an optional "top" object sets top-level scheduler options).
 */
'use strict';
const fs = require('node:fs');
const { generateTrace, syntheticProfiles, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, LOAD_SCENARIOS, inlaidVariant } = require('./common');
const BASELINES = { fifo: { policy: 'fifo' }, 'fcfs-maxloras': { policy: 'fcfs-maxloras', maxLoras: 4 } };

const flags = parseFlags(process.argv.slice(2), []);
const list = (name, dflt) => (flags.get(name) ?? dflt).split(',');
const scenarios = list('scenarios', 'full,scarce');
const tasksList = list('tasks', '10,100,1000').map(Number);
const loads = list('loads', '1,1.25,1.5,1.75,2').map(Number);
const seeds = list('seeds', '1,2,3').map(Number);
const duration = numberFlag(flags, 'duration', 300);
const cpuModel = flags.get('cpu-model');
const SCENARIOS = cpuModel === undefined ? { ...LOAD_SCENARIOS } : { ...LOAD_SCENARIOS, cpu: { ...LOAD_SCENARIOS.cpu, model: cpuModel, satRate: numberFlag(flags, 'cpu-sat-rate', NaN) } };
if (Number.isNaN(SCENARIOS.cpu.satRate)) throw new Error('--cpu-model needs --cpu-sat-rate (the saturated rate of fifo, 100 tasks, on that model)');
const h200Model = flags.get('h200-model');
if (h200Model !== undefined) {
  SCENARIOS.full = { ...SCENARIOS.full, model: h200Model, satRate: numberFlag(flags, 'full-sat-rate', NaN) };
  SCENARIOS.scarce = { ...SCENARIOS.scarce, model: h200Model, satRate: numberFlag(flags, 'scarce-sat-rate', NaN) };
  if (Number.isNaN(SCENARIOS.full.satRate) || Number.isNaN(SCENARIOS.scarce.satRate)) {
    throw new Error('--h200-model needs --full-sat-rate and --scarce-sat-rate (saturated rates of fifo, 100 tasks, on that model)');
  }
}
const cacheTag = (scName) => {
  if (scName === 'cpu' && cpuModel !== undefined) return `${scName}@${cpuModel}`;
  if (scName !== 'cpu' && h200Model !== undefined) return `${scName}@${h200Model}`;
  return scName;
};
const cachePath = flags.get('cache') ?? '/tmp/variant-sweep-cache.json';
const variants = (flags.get('variants') ?? 'inlaid={}').split(';').map((v) => {
  const i = v.indexOf('=');
  return { name: v.slice(0, i), scheduler: inlaidVariant(v.slice(i + 1)) };
});
const cache = fs.existsSync(cachePath) ? JSON.parse(fs.readFileSync(cachePath, 'utf8')) : {};

function run(scName, trace, scheduler) {
  const sc = SCENARIOS[scName];
  const model = loadModel(sc.model);
  const sched = sc.slo === undefined ? scheduler : { ...scheduler, defaultSlo: sc.slo };
  const { report } = simulate(trace, { scheduler: sched, costModel: model, workers: 1, kvBlocks: sc.kvBlocks, drainS: 600 });
  return { slo: report.slo_attainment, tok: report.throughput_tok_s };
}

const rows = [];
const summary = new Map(variants.map((v) => [v.name, { met: 0, n: 0, slo: 0, worstTok: Infinity }]));
for (const scName of scenarios) {
  for (const tasks of tasksList) {
    for (const load of loads) {
      const rate = Number((load * SCENARIOS[scName].satRate).toPrecision(3));
      const line = [`${scName} t${tasks} x${load}`];
      const acc = new Map(variants.map((v) => [v.name, { slo: 0, met: 0 }]));
      let base = { fifo: 0, fcfs: 0 };
      for (const seed of seeds) {
        const trace = generateTrace(syntheticProfiles(tasks, 1, SCENARIOS[scName].profiles), { rate, cv: 2, alpha: 1, durationS: duration, seed });
        const b = {};
        for (const [name, s] of Object.entries(BASELINES)) {
          const key = `${cacheTag(scName)}|${tasks}|${rate}|${seed}|${duration}|${name}`;
          cache[key] ??= run(scName, trace, s);
          b[name] = cache[key];
        }
        base = { fifo: base.fifo + b.fifo.slo / seeds.length, fcfs: base.fcfs + b['fcfs-maxloras'].slo / seeds.length };
        const bestTok = Math.max(b.fifo.tok, b['fcfs-maxloras'].tok);
        for (const v of variants) {
          const r = run(scName, trace, v.scheduler);
          const met = r.slo >= 2 * b.fifo.slo && r.slo >= 2 * b['fcfs-maxloras'].slo && r.tok >= 0.99 * bestTok;
          rows.push({ scenario: scName, tasks, load, rate, seed, variant: v.name, ...r, fifo: b.fifo, fcfs: b['fcfs-maxloras'], met });
          const a = acc.get(v.name);
          a.slo += r.slo / seeds.length;
          a.met += met ? 1 : 0;
          const s = summary.get(v.name);
          s.n += 1;
          s.met += met ? 1 : 0;
          s.slo += r.slo;
          s.worstTok = Math.min(s.worstTok, r.tok / bestTok);
        }
      }
      line.push(`fifo ${base.fifo.toFixed(2)} fcfs ${base.fcfs.toFixed(2)}`);
      for (const v of variants) line.push(`${v.name} ${acc.get(v.name).slo.toFixed(2)} (${acc.get(v.name).met}/${seeds.length})`);
      console.log(line.join(' | '));
      fs.writeFileSync(cachePath, JSON.stringify(cache));
    }
  }
}
for (const [name, s] of summary) console.log(`${name}: goal met ${s.met}/${s.n}, mean SLO ${(s.slo / s.n).toFixed(3)}, worst throughput ${(100 * s.worstTok).toFixed(1)}% of the better baseline`);
if (flags.has('out')) fs.writeFileSync(flags.get('out'), JSON.stringify(rows, null, 1));
