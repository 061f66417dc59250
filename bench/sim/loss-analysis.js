#!/usr/bin/env node
/**
 * Why does a policy miss SLOs at one operating point? Per-request breakdown of the simulator's outcomes for each
 * policy on the same traces: met, missed on TTFT only, on TPOT only, on both, unfinished; preempted requests;
 * mean batch rows; attainment by arrival minute. Several seeds.
 * Usage: npx tsc -b libs/sim && node bench/sim/loss-analysis.js --scenario full|scarce|cpu --tasks 100 --load 1.5
 *        [--seeds 1,2,3] [--duration 300] [--variants 'inlaid;fifo;fcfs-maxloras'] [--json]
 * Variants: the four policies, or inlaid:<json of inlaid options>, e.g. 'inlaid:{"srtf":false}'.
 */
'use strict';
const { generateTrace, syntheticProfiles, parseFlags, numberFlag, DEFAULT_PROFILE_OPTIONS } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel } = require('./common');
const { SCARCE_KV_BLOCKS, CPU_PROFILES } = require('./evidence-scenarios');

/** Saturated rates measured by the evidence sweep (fifo, 100 tasks): sim-evidence-2026-11-29-h200.md. */
const SCENARIOS = {
  full: { model: 'h200-measured.json', kvBlocks: undefined, satRate: 28.23, slo: undefined, profiles: DEFAULT_PROFILE_OPTIONS },
  scarce: { model: 'h200-measured.json', kvBlocks: SCARCE_KV_BLOCKS, satRate: 20.77, slo: undefined, profiles: DEFAULT_PROFILE_OPTIONS },
  cpu: { model: 'cpu-tiny-measured.json', kvBlocks: undefined, satRate: 5, slo: { ttftS: 1.5, tpotS: 0.1 }, profiles: CPU_PROFILES },
};

const flags = parseFlags(process.argv.slice(2), ['json']);
const sc = SCENARIOS[flags.get('scenario') ?? 'full'];
if (sc === undefined) throw new Error(`--scenario must be one of ${Object.keys(SCENARIOS).join(', ')}`);
const tasks = numberFlag(flags, 'tasks', 100);
const load = numberFlag(flags, 'load', 1.5);
const duration = numberFlag(flags, 'duration', 300);
const seeds = (flags.get('seeds') ?? '1').split(',').map(Number);
const variants = (flags.get('variants') ?? 'inlaid;fifo;fcfs-maxloras').split(';');
const model = loadModel(sc.model);
const rate = Number((load * sc.satRate).toPrecision(2));

function schedulerOf(v) {
  const [policy, extra] = v.split(/:(.*)/s);
  const base = policy === 'fcfs-maxloras' ? { policy, maxLoras: 4 } : { policy };
  if (extra === undefined) return base;
  const o = JSON.parse(extra);
  const { top, ...inlaid } = o;
  return { ...base, ...(top ?? {}), inlaid };
}

const out = [];
for (const v of variants) {
  const agg = { met: 0, ttftOnly: 0, tpotOnly: 0, both: 0, unfinished: 0, preempted: 0, n: 0, tok: 0, rows: 0, steps: 0, endS: 0, byMin: [] };
  for (const seed of seeds) {
    const trace = generateTrace(syntheticProfiles(tasks, 1, sc.profiles), { rate, cv: 2, alpha: 1, durationS: duration, seed });
    const slo = sc.slo ?? { ttftS: model.suggested_slo.ttft_s, tpotS: model.suggested_slo.tpot_s };
    const { report, stats, results } = simulate(trace, { scheduler: { ...schedulerOf(v), defaultSlo: slo }, costModel: model, workers: 1, kvBlocks: sc.kvBlocks, drainS: 600 });
    agg.tok += report.throughput_tok_s / seeds.length;
    agg.rows += stats.meanBatchRows / seeds.length;
    agg.endS += stats.endS / seeds.length;
    for (const r of results) {
      agg.n += 1;
      const m = Math.floor(r.arrivalS / 60);
      agg.byMin[m] ??= { n: 0, met: 0 };
      agg.byMin[m].n += 1;
      if (r.metSlo) agg.byMin[m].met += 1;
      if ((r.preemptions ?? 0) > 0) agg.preempted += 1;
      if (r.finishS === undefined) agg.unfinished += 1;
      else if (r.metSlo) agg.met += 1;
      else {
        const t = (r.ttftS ?? 0) > slo.ttftS;
        const p = (r.tpotS ?? 0) > slo.tpotS;
        if (t && p) agg.both += 1;
        else if (t) agg.ttftOnly += 1;
        else agg.tpotOnly += 1;
      }
    }
  }
  const f = (x) => (x / agg.n).toFixed(3);
  const row = { variant: v, slo: f(agg.met), ttft_only: f(agg.ttftOnly), tpot_only: f(agg.tpotOnly), both: f(agg.both), unfinished: f(agg.unfinished), preempted: f(agg.preempted), tok_s: agg.tok.toFixed(0), rows: agg.rows.toFixed(1), end_s: agg.endS.toFixed(0), by_min: agg.byMin.map((b) => (b.met / b.n).toFixed(2)).join(' ') };
  out.push(row);
  if (!flags.has('json')) console.log(`${flags.get('scenario') ?? 'full'} tasks ${tasks} rate ${rate} (load ${load}) seeds ${seeds.join(',')} | ${Object.entries(row).map(([k, x]) => `${k} ${x}`).join(' | ')}`);
}
if (flags.has('json')) console.log(JSON.stringify({ tasks, load, rate, seeds, rows: out }));
