#!/usr/bin/env node
/**
 * Throughput bound of SLO-respecting schedules (issue 5, helper SC, 2026-11-30). Pure arithmetic on a cost model's
 * terms, next to the simulator's measured runs of the same trace. For each high-load point of an evidence sweep:
 *
 *   step_s = F + c_a * adapters + c_ps * [step prefills] + (per-row and per-token work)
 *
 * Per-token work is schedule-invariant without preemption: every request is prefilled once (prompt x c_p), decodes
 * (o - 1) rows (c_row each), and holds its context in KV for each of its steps (sum of the context over its life x c_kv),
 * whatever the batch. Call that total W (seconds). A schedule's busy time is W + N * F + sum(adapters) * c_a + N_p * c_ps
 * (N steps, N_p of them prefill), and its throughput is tokens / (busy + idle). The schedule only chooses the overhead.
 *
 * A row meets a TPOT SLO T only if the steps of its life average <= T. Assumption A1: while at least one row that
 * meets its SLO is decoding ("constrained time", D_c), the steps average <= T (exact when those rows' lives are
 * aligned; with arbitrary overlaps the mean could reach 2T; the simulator check below measures it). Then
 * N_c >= D_c / T steps pay the overhead F'_c = F + c_a * a_c + c_ps * pi_c, and those steps do at most D_c * (1 - F'_c / T)
 * of W; the rest of W runs in unconstrained steps whose overhead share is phi. So
 *
 *   busy_X >= D_c + (W - D_c * (1 - F'_c / T)) / (1 - phi),   ratio_X <= (busy_best + idle_best) / (busy_X + idle_best)
 *
 * against the better baseline (fifo or fcfs-maxloras: the higher throughput), assuming X idles no less than it (both
 * are saturated at these loads; idle is reported). Two cases:
 *   - protect-all: every arrival that can still meet its SLO is protected, as inlaid does, so D_c = the arrival window
 *     (first to last arrival) less the baseline's idle time. a_c = 1 (strict: one adapter per step; no policy does
 *     better) and a_c = inlaid's measured distinct adapters per constrained step ("as grouped as inlaid");
 *     pi_c = T / TTFT (one prefill step per TTFT window at least, when arrivals keep coming; 0 if c_ps = 0).
 *   - minimum for the goal: only alpha* = 2 x the better baseline's SLO attainment must meet, chosen as the cheapest
 *     requests (least row work c_row * (o - 1) + c_kv * sum of context over the life). Their row work must fit in
 *     constrained steps of mean <= T next to F'_c (a_c = 1): D_c >= T * sum(row work of M) / (T - F'_c).
 * phi: "strict" = steps of max_batch_rows rows with one adapter and no prefill-step cost (no schedule's unconstrained
 * steps are cheaper per token, given the mean per-token work u = W / tokens); "fifo" = the baseline's own overhead share.
 *
 * Then the simulator: inlaid (the current defaults, budget 0.95 T) and inlaid with the budget at T (budgetSafety 1): measured
 * throughput ratio, constrained time (union of the meeting rows' [first token, finish]), mean step inside it (A1 check),
 * and its overhead split.
 *
 * Usage: npx tsc -b libs/sim && node bench/sim/slo-bound.js --evidence bench/results/sim-evidence-...json
 *        [--scenario h200-measured-full-kv] [--set h200|cpu] [--model FILE] [--tag NAME] [--all]
 *   (--all: every high-load point, met or not; default: every high-load point too, the table marks the missed ones)
 * Writes bench/results/sim-slo-bound-<date>[-tag].{md,json}.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Scheduler } = require('../../libs/scheduling/dist');
const { generateTrace, syntheticProfiles, parseFlags } = require('../../libs/workload/dist');
const { simulate } = require('../../libs/sim/dist');
const { loadModel, POLICIES, provenance, writeResult, root } = require('./common');
const { scenarioSet } = require('./evidence-scenarios');

const flags = parseFlags(process.argv.slice(2), ['all']);
const evidence = JSON.parse(fs.readFileSync(path.resolve(root, flags.get('evidence')), 'utf8'));
const scenarioId = flags.get('scenario') ?? evidence.scenarios[0].id;
const setName = flags.get('set') ?? evidence.set;
const modelFile = flags.get('model') ?? evidence.scenarios.find((s) => s.id === scenarioId).model;
const sc = scenarioSet(setName, modelFile).find((s) => s.id === scenarioId);
const ev = evidence.scenarios.find((s) => s.id === scenarioId);
const m = loadModel(modelFile);
const slo = ev.slo;
const T = slo.tpotS;
const kvBlocks = sc.kvBlocks;
const R = m.max_batch_rows;
const duration = evidence.duration ?? 300;

// Per-step record of the run in progress (the hook reads the scheduler's plan; the simulator itself is unchanged).
let steps;
const schedule = Scheduler.prototype.schedule;
Scheduler.prototype.schedule = function (now, workerId, accepts) {
  const plan = schedule.call(this, now, workerId, accepts);
  if (plan.batch.length === 0) return plan;
  const slot = this.workers.get(workerId);
  let prefill = 0;
  let admits = 0;
  for (const d of plan.decisions) if (d.kind === 'admit') { prefill += d.prefillTokens; admits += 1; }
  const tasks = new Set();
  let kv = 0;
  for (const r of slot.running.values()) { tasks.add(r.spec.task); kv += r.spec.promptTokens + r.generated; }
  const fixed = m.base_s + tasks.size * m.adapter_s + (prefill > 0 ? (m.prefill_step_s ?? 0) : 0);
  const dt = fixed + prefill * m.prefill_token_s + (plan.batch.length - admits) * m.decode_row_s + kv * m.kv_token_s;
  steps.push({ t: now, dt, fixed, adapters: tasks.size, rows: plan.batch.length });
  return plan;
};

function run(trace, scheduler) {
  steps = [];
  const { report, stats, results } = simulate(trace, { scheduler: { ...scheduler, defaultSlo: slo }, costModel: m, workers: 1, kvBlocks, drainS: 600 });
  const t = stats.time;
  const busy = t.baseS + t.prefillS + t.decodeRowsS + t.adaptersS + t.kvS;
  const prefillSteps = steps.filter((s) => s.fixed > m.base_s + s.adapters * m.adapter_s + 1e-15).length;
  const overhead = t.baseS + t.adaptersS + prefillSteps * (m.prefill_step_s ?? 0);
  const first = trace[0].arrival_s;
  const span = stats.endS - first;
  const tokens = report.throughput_tok_s * span;
  // Constrained time: union of [first token, finish] of the requests that met their SLO.
  const iv = results.filter((r) => r.metSlo && r.ttftS !== undefined).map((r) => [r.arrivalS + r.ttftS, r.finishS]).sort((a, b) => a[0] - b[0]);
  let dc = 0;
  let cur;
  for (const [a, b] of iv) {
    if (cur === undefined || a > cur[1]) { if (cur) dc += cur[1] - cur[0]; cur = [a, b]; } else cur[1] = Math.max(cur[1], b);
  }
  if (cur) dc += cur[1] - cur[0];
  // Steps that start inside the union (one pass over sorted steps and merged intervals).
  const merged = [];
  for (const [a, b] of iv) { const l = merged[merged.length - 1]; if (l && a <= l[1]) l[1] = Math.max(l[1], b); else merged.push([a, b]); }
  let j = 0;
  const c = { n: 0, s: 0, adapters: 0, fixed: 0 };
  for (const s of steps) {
    while (j < merged.length && merged[j][1] <= s.t) j++;
    if (j < merged.length && s.t >= merged[j][0]) { c.n++; c.s += s.dt; c.adapters += s.adapters; c.fixed += s.fixed; }
  }
  return {
    slo: report.slo_attainment, tok_s: report.throughput_tok_s, span, busy, idle: span - busy, tokens, steps: stats.steps,
    prefill_steps: prefillSteps, overhead, work: busy - overhead, base_s: t.baseS, adapters_s: t.adaptersS,
    mean_step_s: busy / stats.steps, adapters_per_step: stats.meanAdaptersPerStep, rows_per_step: stats.meanBatchRows,
    preemptions: stats.preemptions, constrained_s: dc, constrained_steps: c.n, constrained_mean_step_s: c.n > 0 ? c.s / c.n : 0,
    constrained_adapters: c.n > 0 ? c.adapters / c.n : 0, mean_tpot_s: report.mean_tpot_s,
  };
}

/** busy time lower bound for a schedule with constrained time dc and constrained overhead fc per step. */
const busyBound = (W, dc, fc, phi) => dc + Math.max(0, W - dc * (1 - fc / T)) / (1 - phi);

const goal = evidence.goal.filter((g) => g.scenario === scenarioId);
const out = [];
for (const g of goal) {
  const profiles = syntheticProfiles(g.tasks, 1, sc.profiles);
  for (const p of g.points) {
    const trace = generateTrace(profiles, { rate: p.rate, cv: 2, alpha: 1, durationS: duration, seed: 1 });
    const runs = {};
    for (const [label, s] of POLICIES.filter(([l]) => l !== 'mlfq')) runs[label] = run(trace, s);
    runs['inlaid safety 1'] = run(trace, { policy: 'inlaid', inlaid: { budgetSafety: 1 } });
    const bestLabel = runs.fifo.tok_s >= runs['fcfs-maxloras'].tok_s ? 'fifo' : 'fcfs-maxloras';
    const best = runs[bestLabel];
    // W from fifo's run (the invariant; preemption recompute would add to it).
    const W = runs.fifo.work;
    const u = W / best.tokens;
    const ttftPi = (m.prefill_step_s ?? 0) > 0 ? T / slo.ttftS : 0;
    const fc1 = m.base_s + m.adapter_s + (m.prefill_step_s ?? 0) * ttftPi;
    const fcInl = m.base_s + m.adapter_s * runs.inlaid.constrained_adapters + (m.prefill_step_s ?? 0) * ttftPi;
    const fu = m.base_s + m.adapter_s;
    const phiStrict = fu / (fu + R * u);
    const phiFifo = best.overhead / best.busy;
    const window = trace[trace.length - 1].arrival_s - trace[0].arrival_s - best.idle;
    const ratio = (busyX) => best.span / (busyX + best.idle);
    // Minimum constrained time for alpha* (the cheapest requests by row work).
    const alpha = 2 * Math.max(runs.fifo.slo, runs['fcfs-maxloras'].slo);
    const rowWork = trace.map((r) => (r.output_tokens - 1) * m.decode_row_s + m.kv_token_s * (r.output_tokens * r.prompt_tokens + (r.output_tokens * (r.output_tokens - 1)) / 2)).sort((a, b) => a - b);
    const nM = Math.ceil(alpha * trace.length);
    const workM = rowWork.slice(0, nM).reduce((a, b) => a + b, 0);
    const dcMin = (T * workM) / (T - fc1);
    const bound = {
      alpha_star: alpha,
      u_ms_per_token: u * 1e3,
      window_s: window,
      phi_strict: phiStrict,
      phi_fifo: phiFifo,
      protect_all_strict: ratio(busyBound(W, window, fc1, phiStrict)),
      protect_all_a1_fifo: ratio(busyBound(W, window, fc1, phiFifo)),
      protect_all_inlaid_adapters_fifo: ratio(busyBound(W, window, fcInl, phiFifo)),
      min_goal_dc_s: dcMin,
      min_goal_strict: ratio(busyBound(W, dcMin, fc1, phiStrict)),
      min_goal_fifo: ratio(busyBound(W, dcMin, fc1, phiFifo)),
      // constrained time a schedule could afford at 99% (a_c = 1, rest at fifo's share): solve ratio = 0.99.
      dc_at_99_s: (() => {
        let lo = 0;
        let hi = window;
        if (ratio(busyBound(W, hi, fc1, phiFifo)) >= 0.99) return hi;
        for (let i = 0; i < 60; i++) { const mid = (lo + hi) / 2; if (ratio(busyBound(W, mid, fc1, phiFifo)) >= 0.99) lo = mid; else hi = mid; }
        return lo;
      })(),
    };
    const sim = Object.fromEntries(Object.entries(runs).map(([k, r]) => [k, { ...r, ratio_vs_best: r.tok_s / best.tok_s }]));
    out.push({ tasks: g.tasks, rate: p.rate, load: p.load, met_in_evidence: p.met, ceiling: p.ceiling, best_baseline: bestLabel, bound, sim });
    process.stderr.write(`${g.tasks} tasks ${p.rate} req/s: protect-all ${(bound.protect_all_a1_fifo * 100).toFixed(1)}% (inlaid-grouped ${(bound.protect_all_inlaid_adapters_fifo * 100).toFixed(1)}%), min-goal ${(bound.min_goal_fifo * 100).toFixed(1)}%; sim inlaid ${(sim.inlaid.ratio_vs_best * 100).toFixed(1)}% s1 ${(sim['inlaid safety 1'].ratio_vs_best * 100).toFixed(1)}%\n`);
  }
}
Scheduler.prototype.schedule = schedule;

const pct = (x) => `${(x * 100).toFixed(1)}%`;
const ms = (x) => (x * 1e3).toFixed(x < 0.01 ? 2 : 1);
const prov = provenance('slo-bound.js');
const tag = flags.get('tag');
const stem = `sim-slo-bound-${prov.date.slice(0, 10)}${tag ? `-${tag}` : ''}`;
const lines = [
  `# Throughput bound of SLO-respecting schedules: ${m.label}, ${scenarioId} (${prov.date.slice(0, 10)})`,
  '',
  `- command: \`${prov.command}\`; date ${prov.date}; simulation host ${prov.machine}. Pure arithmetic on the cost model plus`,
  `  simulator runs of the evidence traces (seed 1, ${duration} s, cv 2, alpha 1); method and assumptions: the header of \`bench/sim/slo-bound.js\`.`,
  `- cost model \`${modelFile}\`: F = base ${ms(m.base_s)} ms, c_a = ${ms(m.adapter_s)} ms per adapter, c_ps = ${ms(m.prefill_step_s ?? 0)} ms per prefill step,`,
  `  c_row = ${ms(m.decode_row_s)} ms per decode row, c_kv = ${(m.kv_token_s * 1e6).toFixed(3)} us per KV token, c_p = ${(m.prefill_token_s * 1e6).toFixed(1)} us per prefill token; max ${R} rows;`,
  `  KV ${kvBlocks ?? m.kv_blocks} blocks; SLO TTFT ${slo.ttftS} s, TPOT T = ${T * 1e3} ms.`,
  '',
  '## Bound vs simulator (throughput as a share of the better baseline\'s)',
  '',
  'Columns: **protect-all** = upper bound for any schedule that keeps every arrival saveable through the arrival window',
  '(constrained steps average <= T; a_c = 1 adapter per step; the rest at the baseline\'s overhead share; `strict`: the rest at',
  `${R} rows per step); **as grouped as inlaid** = the same with inlaid's measured adapters per constrained step; **min for goal** =`,
  'upper bound when only 2x the better baseline\'s SLO attainment (alpha*) must be met by the cheapest requests; **D_c at 99%** =',
  'constrained seconds a schedule can afford and still reach 99% (a_c = 1). Sim: inlaid with the defaults of the code that ran (budget 0.95 T; v6 plus `spacingSteps` 8, which acts only with a fixed prefill-step cost) and inlaid at T',
  '(budgetSafety 1); "constrained" = union of the meeting rows\' lives, with the mean step inside it (A1 check: <= T?).',
  '',
  '| tasks | rate (load) | evidence verdict | best baseline: tok/s, mean step, adapters/step | alpha* | protect-all (strict) | as grouped as inlaid | min for goal | D_c at 99% / window (s) | sim inlaid: SLO, tput, mean step, constrained s, mean constrained step | sim inlaid at T: SLO, tput, constrained mean step |',
  '|---|---|---|---|---|---|---|---|---|---|---|',
];
for (const r of out) {
  const b = r.bound;
  const best = r.sim[r.best_baseline];
  const i = r.sim.inlaid;
  const s1 = r.sim['inlaid safety 1'];
  const verdict = r.met_in_evidence ? 'met' : r.ceiling ? 'ceiling' : '**missed**';
  lines.push(`| ${r.tasks} | ${r.rate} (${r.load.toFixed(2)}x) | ${verdict} | ${r.best_baseline}: ${best.tok_s.toFixed(0)}, ${ms(best.mean_step_s)} ms, ${best.adapters_per_step.toFixed(1)} | ${b.alpha_star.toFixed(3)} | ${pct(b.protect_all_a1_fifo)} (${pct(b.protect_all_strict)}) | ${pct(b.protect_all_inlaid_adapters_fifo)} | ${b.alpha_star > 1 ? 'ceiling (alpha* > 1: 2x impossible)' : `${pct(b.min_goal_fifo)} (D_c ${b.min_goal_dc_s.toFixed(0)} s)`} | ${b.dc_at_99_s.toFixed(0)} / ${b.window_s.toFixed(0)} | ${i.slo.toFixed(3)}, ${pct(i.ratio_vs_best)}, ${ms(i.mean_step_s)} ms, ${i.constrained_s.toFixed(0)} s, ${ms(i.constrained_mean_step_s)} ms (${i.constrained_adapters.toFixed(1)} adapters) | ${s1.slo.toFixed(3)}, ${pct(s1.ratio_vs_best)}, ${ms(s1.constrained_mean_step_s)} ms |`);
}
lines.push('');
lines.push('## Overhead split (seconds of busy time; W = schedule-invariant work)');
lines.push('');
lines.push('| tasks | rate | policy | span s | idle s | W s | base s | adapters s | prefill-step s | steps | rows/step | preemptions |');
lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of out) {
  for (const [k, x] of Object.entries(r.sim)) {
    lines.push(`| ${r.tasks} | ${r.rate} | ${k} | ${x.span.toFixed(1)} | ${x.idle.toFixed(1)} | ${x.work.toFixed(1)} | ${x.base_s.toFixed(1)} | ${x.adapters_s.toFixed(1)} | ${(x.overhead - x.base_s - x.adapters_s).toFixed(1)} | ${x.steps} | ${x.rows_per_step.toFixed(1)} | ${x.preemptions} |`);
  }
}
writeResult(`${stem}.json`, { ...prov, model: modelFile, scenario: scenarioId, slo, points: out });
console.log(writeResult(`${stem}.md`, `${lines.join('\n')}\n`));
