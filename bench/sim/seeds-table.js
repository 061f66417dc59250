#!/usr/bin/env node
/**
 * Summarizes variant-sweep.js rows (from one or more JSON files, e.g. an earlier study and a new one on the same
 * traces) as Markdown: per variant and scenario the goal count and mean SLO, the worst throughput against the better
 * baseline, and the points each variant misses. No simulation.
 * Usage: node bench/sim/seeds-table.js rows.json [more.json ...] [--variants a,b,c] [--misses b] [--scenarios cpu]
 * A file is a variant-sweep --out array, or an object with a `rows` array (the committed sim-evidence-*-seeds.json).
 */
'use strict';
const fs = require('node:fs');

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? undefined : args.splice(i, 2)[1];
};
const wanted = opt('variants')?.split(',');
const missesOf = opt('misses')?.split(',') ?? [];
const onlyScenarios = opt('scenarios')?.split(',');
const rows = args.flatMap((f) => {
  const d = JSON.parse(fs.readFileSync(f, 'utf8'));
  return (Array.isArray(d) ? d : d.rows).filter((r) => onlyScenarios === undefined || onlyScenarios.includes(r.scenario));
});
const variants = wanted ?? [...new Set(rows.map((r) => r.variant))];
const scenarios = [...new Set(rows.map((r) => r.scenario))];
const pct = (x) => `${(100 * x).toFixed(1)}%`;

const head = `| variant | ${scenarios.map((s) => `${s}: met, mean SLO`).join(' | ')} | all: met | worst throughput vs better baseline |`;
const out = [head, `|${'---|'.repeat(scenarios.length + 3)}`];
for (const v of variants) {
  const of = rows.filter((r) => r.variant === v);
  if (of.length === 0) throw new Error(`no rows for variant "${v}"`);
  const cells = scenarios.map((s) => {
    const sub = of.filter((r) => r.scenario === s);
    return `${sub.filter((r) => r.met).length}/${sub.length}, ${(sub.reduce((a, r) => a + r.slo, 0) / sub.length).toFixed(3)}`;
  });
  const worst = Math.min(...of.map((r) => r.tok / Math.max(r.fifo.tok, r.fcfs.tok)));
  out.push(`| ${v} | ${cells.join(' | ')} | ${of.filter((r) => r.met).length}/${of.length} | ${pct(worst)} |`);
}
for (const v of missesOf) {
  out.push('', `Misses of ${v}:`, '');
  for (const r of rows.filter((x) => x.variant === v && !x.met)) {
    const best = Math.max(r.fifo.slo, r.fcfs.slo);
    const tp = r.tok / Math.max(r.fifo.tok, r.fcfs.tok);
    const why = best > 0.5 ? 'ceiling (a baseline > 0.5)' : r.slo < 2 * best ? `${(r.slo / best).toFixed(2)}x the better baseline` : `throughput ${pct(tp)}`;
    out.push(`- ${r.scenario}, ${r.tasks} tasks, ${r.load}x, seed ${r.seed}: ${r.slo.toFixed(3)} vs fifo ${r.fifo.slo.toFixed(3)} / fcfs-maxloras ${r.fcfs.slo.toFixed(3)}, ${pct(tp)} throughput: ${why}`);
  }
}
console.log(out.join('\n'));
