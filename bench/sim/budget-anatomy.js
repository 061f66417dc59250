#!/usr/bin/env node
/**
 * Where do a policy's steps come from? Splits one simulated run at the last arrival into the arrival phase and the
 * drain, and reports per phase: steps, rows, distinct adapters and resident KV tokens per step, prefill tokens, and the
 * rows that could still meet their SLO ("saveable") or could not ("lost"). For inlaid it also reports how full the
 * SLO-aware step budget (step-budget.ts) kept the arrival-phase steps: the decode part of each step (cost model terms
 * without prefill) divided by the budget the scheduler used then. Points are addressed as in variant-sweep.js (rate =
 * load x the scenario's saturated rate, 3 significant digits), so they match the seed tables.
 * Reads the Scheduler's private state (running rows, prefill share) from the compiled library by wrapping
 * `Scheduler.prototype.schedule` for the run; analysis only, nothing is changed.
 * Usage: npx tsc -b libs/sim && node bench/sim/budget-anatomy.js --scenario cpu --tasks 10 --load 1.25 --seed 2
 *        [--variants 'inlaid;fifo;fcfs-maxloras'] [--json]   (inlaid:<json of inlaid options> as in loss-analysis.js)
 */
'use strict';
const { Scheduler } = require('../../libs/scheduling/dist');
const { pastTtft, stepBudgetS } = require('../../libs/scheduling/dist/step-budget');
const { generateTrace, syntheticProfiles, parseFlags, numberFlag } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, LOAD_SCENARIOS: SCENARIOS, inlaidVariant } = require('./common');

const flags = parseFlags(process.argv.slice(2), ['json']);
const scName = flags.get('scenario') ?? 'cpu';
const sc = SCENARIOS[scName];
if (sc === undefined) throw new Error(`--scenario must be one of ${Object.keys(SCENARIOS).join(', ')}`);
const tasks = numberFlag(flags, 'tasks', 10);
const load = numberFlag(flags, 'load', 1);
const seed = numberFlag(flags, 'seed', 1);
const variants = (flags.get('variants') ?? 'inlaid;fifo;fcfs-maxloras').split(';');
const m = loadModel(sc.model);
const slo = sc.slo ?? { ttftS: m.suggested_slo.ttft_s, tpotS: m.suggested_slo.tpot_s };
const rate = Number((load * sc.satRate).toPrecision(3));
const trace = generateTrace(syntheticProfiles(tasks, 1, sc.profiles), { rate, cv: 2, alpha: 1, durationS: 300, seed });
const lastArrival = trace[trace.length - 1].arrival_s;

const phase = () => ({ steps: 0, rows: 0, adapters: 0, kvTokens: 0, prefillTokens: 0, saveable: 0, lost: 0, budgetSteps: 0, fill: 0, fillOver90: 0 });
let acc;
const schedule = Scheduler.prototype.schedule;
Scheduler.prototype.schedule = function (now, workerId, accepts) {
  const plan = schedule.call(this, now, workerId, accepts);
  if (plan.batch.length === 0) return plan;
  const p = now < lastArrival ? acc.arrival : acc.drain;
  const slot = this.workers.get(workerId);
  const taskSet = new Set();
  let kv = 0;
  for (const r of slot.running.values()) {
    taskSet.add(r.spec.task);
    kv += r.spec.promptTokens + r.generated;
    if (pastTtft(r, now)) p.lost += 1;
    else p.saveable += 1;
  }
  for (const d of plan.decisions) if (d.kind === 'admit') p.prefillTokens += d.prefillTokens;
  p.steps += 1;
  p.rows += plan.batch.length;
  p.adapters += taskSet.size;
  p.kvTokens += kv;
  if (this.policy.name === 'inlaid' && this.policy.budgetSafety !== undefined) {
    const decode = m.base_s + plan.batch.length * m.decode_row_s + taskSet.size * m.adapter_s + kv * m.kv_token_s;
    const f = decode / stepBudgetS(slo.tpotS, this.policy.budgetSafety, slot.prefill.share());
    p.budgetSteps += 1;
    p.fill += f;
    if (f >= 0.9) p.fillOver90 += 1;
  }
  return plan;
};

function schedulerOf(v) {
  const [policy, extra] = v.split(/:(.*)/s);
  const base = policy === 'fcfs-maxloras' ? { policy, maxLoras: 4 } : { policy };
  return extra === undefined ? base : inlaidVariant(extra, base);
}

const per = (p, k) => (p.steps > 0 ? p[k] / p.steps : 0);
const summary = (p) => ({
  steps: p.steps,
  rows: per(p, 'rows'),
  adapters: per(p, 'adapters'),
  kv_tokens: per(p, 'kvTokens'),
  prefill_tokens: p.prefillTokens,
  saveable_rows: per(p, 'saveable'),
  lost_rows: per(p, 'lost'),
  ...(p.budgetSteps > 0 ? { budget_fill: p.fill / p.budgetSteps, steps_over_90pct_budget: p.fillOver90 / p.budgetSteps } : {}),
});
const out = [];
for (const v of variants) {
  acc = { arrival: phase(), drain: phase() };
  const { report, stats } = simulate(trace, { scheduler: { ...schedulerOf(v), defaultSlo: slo }, costModel: m, workers: 1, kvBlocks: sc.kvBlocks, drainS: 600 });
  out.push({ variant: v, slo: report.slo_attainment, tok_s: report.throughput_tok_s, end_s: stats.endS, preemptions: stats.preemptions, time: stats.time, arrival: summary(acc.arrival), drain: { ...summary(acc.drain), seconds: stats.endS - lastArrival } });
}
Scheduler.prototype.schedule = schedule;
if (flags.has('json')) console.log(JSON.stringify({ scenario: scName, tasks, load, rate, seed, last_arrival_s: lastArrival, rows: out }));
else {
  const f = (x) => (typeof x === 'number' && !Number.isInteger(x) ? x.toFixed(x < 10 ? 3 : 1) : String(x));
  const line = (o) => Object.entries(o).map(([k, x]) => `${k} ${f(x)}`).join(', ');
  for (const r of out) {
    console.log(`${scName} tasks ${tasks} load ${load} (rate ${rate}) seed ${seed} | ${r.variant}: SLO ${r.slo.toFixed(3)}, ${r.tok_s.toFixed(1)} tok/s, end ${r.end_s.toFixed(1)} s, preemptions ${r.preemptions}`);
    console.log(`  time: ${line(r.time)}`);
    console.log(`  arrival phase: ${line(r.arrival)}`);
    console.log(`  drain: ${line(r.drain)}`);
  }
}
