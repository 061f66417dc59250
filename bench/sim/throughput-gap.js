#!/usr/bin/env node
/**
 * Where does inlaid lose throughput against fifo at one point of the seed sweep? For each policy on the same trace:
 * the span (first arrival to last finish), busy time split into step-time terms (libs/sim/src/step-terms.ts), idle time
 * while requests waited, steps, rows per step, prefill steps (steps that admit) and their mean admits / prefill tokens,
 * recomputed prefill tokens (preemptions), and the same split for the arrival phase and the drain. Points are addressed
 * as in variant-sweep.js (rate = load x saturated rate, 3 significant digits). Wraps Scheduler.prototype.schedule of
 * the compiled library to see each plan; analysis only.
 * Usage: npx tsc -b libs/sim && node bench/sim/throughput-gap.js --scenario full|scarce|cpu --tasks 10 --load 1.25
 *        --seed 3 [--model h200-served-s8.json --sat-rate 27.9] [--variants 'inlaid;fifo;inlaid:{"beta":3}'] [--json]
 */
'use strict';
const { Scheduler } = require('../../libs/scheduling/dist');
const { generateTrace, syntheticProfiles, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, LOAD_SCENARIOS, inlaidVariant } = require('./common');

const flags = parseFlags(process.argv.slice(2), ['json']);
const sc0 = LOAD_SCENARIOS[flags.get('scenario') ?? 'full'];
const sc = flags.has('model') ? { ...sc0, model: flags.get('model'), satRate: numberFlag(flags, 'sat-rate') } : sc0;
const tasks = numberFlag(flags, 'tasks', 10);
const load = numberFlag(flags, 'load', 1.25);
const seed = numberFlag(flags, 'seed', 1);
const variants = (flags.get('variants') ?? 'inlaid;fifo;fcfs-maxloras').split(';');
const m = loadModel(sc.model);
const rate = Number((load * sc.satRate).toPrecision(3));
const trace = generateTrace(syntheticProfiles(tasks, 1, sc.profiles), { rate, cv: 2, alpha: 1, durationS: 300, seed });
const lastArrival = trace[trace.length - 1].arrival_s;

function schedulerOf(v) {
  const [policy, extra] = v.split(/:(.*)/s);
  const base = policy === 'fcfs-maxloras' ? { policy, maxLoras: 4 } : { policy };
  const s = extra === undefined ? base : inlaidVariant(extra, base);
  return sc.slo === undefined ? s : { ...s, defaultSlo: sc.slo };
}

const phase = () => ({ steps: 0, rows: 0, prefillSteps: 0, admits: 0, prefillTokens: 0, recompute: 0, preempts: 0, idleS: 0, busyS: 0 });
function stepS(shape) {
  return m.base_s + shape.prefillTokens * m.prefill_token_s + (shape.prefillTokens > 0 ? (m.prefill_step_s ?? 0) : 0) + shape.decodeRows * m.decode_row_s + shape.adapters * m.adapter_s + shape.kvTokens * m.kv_token_s;
}

const out = [];
for (const v of variants) {
  const acc = { arrival: phase(), drain: phase() };
  const original = Scheduler.prototype.schedule;
  let idleFrom;
  Scheduler.prototype.schedule = function (now, workerId, accepts) {
    const plan = original.call(this, now, workerId, accepts);
    const p = now < lastArrival ? acc.arrival : acc.drain;
    const slot = this.workers.get(workerId);
    if (idleFrom !== undefined) {
      p.idleS += now - idleFrom;
      idleFrom = undefined;
    }
    if (plan.batch.length === 0) {
      if (this.waiting.size > 0) idleFrom = now; // waiting work, nothing planned: idle until the next event
      return plan;
    }
    let prefill = 0;
    let admits = 0;
    for (const d of plan.decisions) {
      if (d.kind === 'admit') {
        prefill += d.prefillTokens;
        admits += 1;
        const r = this.requests.get(d.requestId);
        if (r !== undefined && r.generated > 0) p.recompute += d.prefillTokens;
      } else if (d.kind === 'preempt') p.preempts += 1;
    }
    const taskSet = new Set();
    let kv = 0;
    for (const r of slot.running.values()) {
      taskSet.add(r.spec.task);
      kv += r.spec.promptTokens + r.generated;
    }
    p.steps += 1;
    p.rows += plan.batch.length;
    if (admits > 0) p.prefillSteps += 1;
    p.admits += admits;
    p.prefillTokens += prefill;
    p.busyS += stepS({ prefillTokens: prefill, decodeRows: plan.batch.length - admits, adapters: taskSet.size, kvTokens: kv });
    return plan;
  };
  const { report, stats } = simulate(trace, { scheduler: schedulerOf(v), costModel: m, workers: 1, kvBlocks: sc.kvBlocks, drainS: 600 });
  Scheduler.prototype.schedule = original;
  const t = stats.time;
  const row = {
    variant: v,
    slo: report.slo_attainment,
    tok_s: report.throughput_tok_s,
    finished: report.finished,
    unfinished: report.unfinished,
    end_s: stats.endS,
    busy_s: t.baseS + t.prefillS + t.decodeRowsS + t.adaptersS + t.kvS,
    terms: Object.fromEntries(Object.entries(t).map(([k, x]) => [k, Number(x.toFixed(2))])),
    steps: stats.steps,
    rows_per_step: stats.meanBatchRows,
    adapters_per_step: stats.meanAdaptersPerStep,
    preemptions: stats.preemptions,
    phases: acc,
  };
  out.push(row);
}

if (flags.has('json')) console.log(JSON.stringify({ scenario: flags.get('scenario') ?? 'full', model: sc.model, tasks, load, rate, seed, lastArrival, rows: out }, null, 1));
else {
  console.log(`${sc.model} tasks ${tasks} load ${load} rate ${rate} seed ${seed}; last arrival ${lastArrival.toFixed(1)} s, ${trace.length} requests`);
  const f = (x, d = 1) => Number(x).toFixed(d);
  for (const r of out) {
    console.log(`\n${r.variant}: SLO ${f(r.slo, 3)} tok/s ${f(r.tok_s, 0)} end ${f(r.end_s)} s busy ${f(r.busy_s)} s unfinished ${r.unfinished} steps ${r.steps} rows/step ${f(r.rows_per_step, 2)} adapters/step ${f(r.adapters_per_step, 2)} preempt ${r.preemptions}`);
    console.log(`  terms: ${JSON.stringify(r.terms)}`);
    for (const [name, p] of Object.entries(r.phases)) {
      console.log(`  ${name}: steps ${p.steps} rows/step ${f(p.rows / Math.max(p.steps, 1), 2)} prefill steps ${p.prefillSteps} (admits/step ${f(p.admits / Math.max(p.prefillSteps, 1), 2)}, tok/step ${f(p.prefillTokens / Math.max(p.prefillSteps, 1), 0)}) recompute tok ${p.recompute} preempts ${p.preempts} busy ${f(p.busyS)} s idle-with-waiting ${f(p.idleS)} s`);
    }
  }
}
