#!/usr/bin/env node
/**
 * Why does a policy miss SLOs at one operating point? Per-request breakdown of the simulator's outcomes for each
 * policy on the same traces: met, missed on TTFT only, on TPOT only, on both, unfinished; preempted requests;
 * mean batch rows; attainment by arrival minute; where the worker's time went (step-time terms: steps x base, prefill,
 * decode rows, adapters, KV; libs/sim/src/step-terms.ts), which shows why a policy's throughput differs. Several seeds.
 * Usage: npx tsc -b libs/sim && node bench/sim/loss-analysis.js --scenario full|scarce|cpu --tasks 100 --load 1.5
 *        [--seeds 1,2,3] [--duration 300] [--variants 'inlaid;fifo;fcfs-maxloras'] [--json]
 *        [--model cpu-tiny-measured-s7.json --sat-rate R]   (the scenario with another calibration and its saturated rate)
 * Variants: the four policies, or inlaid:<json of inlaid options>, e.g. 'inlaid:{"srtf":false}'.
 */
'use strict';
const { generateTrace, syntheticProfiles, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, LOAD_SCENARIOS: SCENARIOS, inlaidVariant } = require('./common');

const flags = parseFlags(process.argv.slice(2), ['json']);
const sc0 = SCENARIOS[flags.get('scenario') ?? 'full'];
if (sc0 === undefined) throw new Error(`--scenario must be one of ${Object.keys(SCENARIOS).join(', ')}`);
const sc = flags.has('model') ? { ...sc0, model: flags.get('model'), satRate: numberFlag(flags, 'sat-rate') } : sc0;
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
  return extra === undefined ? base : inlaidVariant(extra, base);
}

const out = [];
for (const v of variants) {
  const agg = { met: 0, ttftOnly: 0, tpotOnly: 0, both: 0, unfinished: 0, preempted: 0, n: 0, tok: 0, rows: 0, steps: 0, endS: 0, byMin: [], time: {} };
  for (const seed of seeds) {
    const trace = generateTrace(syntheticProfiles(tasks, 1, sc.profiles), { rate, cv: 2, alpha: 1, durationS: duration, seed });
    const slo = sc.slo ?? { ttftS: model.suggested_slo.ttft_s, tpotS: model.suggested_slo.tpot_s };
    const { report, stats, results } = simulate(trace, { scheduler: { ...schedulerOf(v), defaultSlo: slo }, costModel: model, workers: 1, kvBlocks: sc.kvBlocks, drainS: 600 });
    agg.tok += report.throughput_tok_s / seeds.length;
    agg.rows += stats.meanBatchRows / seeds.length;
    agg.endS += stats.endS / seeds.length;
    agg.steps += stats.steps / seeds.length;
    for (const [k, t] of Object.entries(stats.time)) agg.time[k] = (agg.time[k] ?? 0) + t / seeds.length;
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
  const row = { variant: v, slo: f(agg.met), ttft_only: f(agg.ttftOnly), tpot_only: f(agg.tpotOnly), both: f(agg.both), unfinished: f(agg.unfinished), preempted: f(agg.preempted), tok_s: agg.tok.toFixed(0), rows: agg.rows.toFixed(1), steps: agg.steps.toFixed(0), end_s: agg.endS.toFixed(0),
    ...Object.fromEntries(Object.entries(agg.time).map(([k, t]) => [`time_${k.replace(/S$/, '_s')}`, t.toFixed(1)])), by_min: agg.byMin.map((b) => (b.met / b.n).toFixed(2)).join(' ') };
  out.push(row);
  if (!flags.has('json')) console.log(`${flags.get('scenario') ?? 'full'} tasks ${tasks} rate ${rate} (load ${load}) seeds ${seeds.join(',')} | ${Object.entries(row).map(([k, x]) => `${k} ${x}`).join(' | ')}`);
}
if (flags.has('json')) console.log(JSON.stringify({ tasks, load, rate, seeds, rows: out }));
