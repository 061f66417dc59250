#!/usr/bin/env node
/**
 * Are two simulator builds decision-identical? Runs each case (a 300-s trace and simulator flags) with every build and
 * compares the summary JSON (sim_wall_s left out) and the per-request dump (--requests-out) byte for byte; for builds
 * that differ, counts the request lines that differ and gives both SLO attainments and throughputs.
 * Usage: node bench/sim/same-decisions.js --builds a=path/to/sim/cli.js,b=... [--out FILE.json] [--dir TMPDIR]
 * The cases: traces A-D of sim-speed-2026-11-30-s8b.md (A: 1000 tasks, 35 req/s, seed 1; B: 2 tasks, 20 req/s, seed 2;
 * C: 100 tasks, 25 req/s, seed 3; D: 100 tasks, 7 req/s, seed 4) x the four policies on their s8b cost models, plus
 * inlaid variants (switches of grouping, fill, triage, starvation, batching, budget, predictor, beta, KV, 2 workers) on A.
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { parseFlags } = require('../../libs/workload/dist');
const { root } = require('./common');

const flags = parseFlags(process.argv.slice(2));
const builds = (flags.get('builds') ?? '').split(',').filter((x) => x !== '').map((b) => {
  const [name, cli] = b.split('=');
  return { name, cli: path.resolve(cli) };
});
if (builds.length < 2) throw new Error('give --builds a=cli.js,b=cli.js');
const dir = path.resolve(flags.get('dir') ?? path.join(os.tmpdir(), 'inlaid-same-decisions'));
fs.mkdirSync(dir, { recursive: true });
const cal = (f) => path.join(root, 'libs/sim/calibration', f);

const TRACES = { A: [1000, 35, 1], B: [2, 20, 2], C: [100, 25, 3], D: [100, 7, 4] };
const MODEL = { A: ['--cost-model', cal('h200-served-s8.json')], B: ['--cost-model', cal('h200-measured.json')], C: ['--cost-model', cal('h200-served-s8.json'), '--kv-blocks', '1855'], D: [] };
const CASES = [];
for (const t of Object.keys(TRACES)) for (const p of ['inlaid', 'fifo', 'fcfs-maxloras', 'mlfq']) CASES.push([t, ['--policy', p]]);
for (const v of [
  ['--budget-fixed-prefill', 'on'], ['--budget-fixed-prefill', 'off'], ['--grouping', 'off'], ['--work-conserving', 'off'], ['--beta', '3'],
  ['--fill-max-tasks', '20'], ['--triage', 'off'], ['--lenient-starvation', 'off'], ['--batched-admission', 'off'], ['--step-budget', 'off'],
  ['--predictor', 'none'], ['--srtf', 'off'], ['--kv-blocks', '1855'], ['--workers', '2'], ['--abort-hopeless', 'on'],
]) CASES.push(['A', ['--policy', 'inlaid', ...v]]);

function trace(t) {
  const [tasks, rate, seed] = TRACES[t];
  const file = path.join(dir, `trace-${t}.jsonl`);
  if (!fs.existsSync(file)) {
    execFileSync('node', [path.join(root, 'libs/workload/dist/cli.js'), '--tasks', `${tasks}`, '--rate', `${rate}`, '--cv', '2', '--alpha', '1', '--duration', '300', '--seed', `${seed}`, '--out', file]);
  }
  return file;
}

const rows = [];
for (const [t, extra] of CASES) {
  const args = ['--trace', trace(t), ...MODEL[t], ...extra, '--json'];
  const out = builds.map((b, i) => {
    const req = path.join(dir, `requests-${i}.jsonl`);
    const stdout = execFileSync('nice', ['-n', '10', 'node', b.cli, ...args, '--requests-out', req], { encoding: 'utf8', maxBuffer: 1 << 26 });
    const summary = JSON.parse(stdout);
    return { summary, text: JSON.stringify({ ...summary, sim_wall_s: undefined }), lines: fs.readFileSync(req, 'utf8').split('\n') };
  });
  const [a, ...rest] = out;
  for (const [i, o] of rest.entries()) {
    const differing = a.lines.reduce((n, line, k) => n + (line === o.lines[k] ? 0 : 1), 0);
    const row = {
      trace: t, flags: extra.join(' '), builds: `${builds[0].name} vs ${builds[i + 1].name}`,
      summary_identical: a.text === o.text, request_lines: a.lines.length - 1, differing_request_lines: differing,
      slo: [a.summary.slo_attainment, o.summary.slo_attainment], tok_s: [a.summary.throughput_tok_s, o.summary.throughput_tok_s],
    };
    rows.push(row);
    process.stderr.write(`${t} ${row.flags} ${row.builds}: ${row.summary_identical && differing === 0 ? 'identical' : `DIFFER (${differing} lines; slo ${row.slo.map((x) => x.toFixed(4)).join(' -> ')}; tok/s ${row.tok_s.map((x) => x.toFixed(0)).join(' -> ')})`}\n`);
  }
}
const outFile = flags.get('out');
if (outFile !== undefined) fs.writeFileSync(outFile, JSON.stringify({ builds, rows }, null, 1));
const same = rows.filter((r) => r.summary_identical && r.differing_request_lines === 0).length;
console.log(`${same} of ${rows.length} comparisons identical`);
