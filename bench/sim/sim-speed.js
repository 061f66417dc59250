#!/usr/bin/env node
/**
 * Simulator speed (issue 5: "a 1-hour trace at 50 requests/s simulates in well under a minute on one core"): every
 * policy x task count (2, 100, 1000) x cost model (the default served CPU fit, h200-served-s8) on the 1-hour traces,
 * each point run by every build given, one after the other (the builds' order alternates from point to point), as
 * separate processes timed by /usr/bin/time: user + sys CPU seconds, which a machine shared with other jobs inflates
 * less than wall time. Also says whether the builds' summaries (sim_wall_s left out) are identical.
 * Usage: npx tsc -b libs/sim && node bench/sim/sim-speed.js [--builds name=path/to/sim/cli.js,...] [--traces DIR]
 *        [--tasks 2,100,1000] [--policies inlaid,fifo,...] [--models default,h200-served-s8.json] [--repeat 1] [--tag s9]
 *   --repeat N: N rounds over every point and build (builds alternating within each); the table gives the median CPU.
 *   --builds: default `current=libs/sim/dist/cli.js`. --traces: where h1-N.jsonl are (default $TMPDIR/inlaid-sim-speed;
 *   made with libs/workload's CLI when missing: --rate 50 --cv 2 --alpha 1 --duration 3600 --seed 1). Writes bench/results/sim-speed-<date>[-tag].{json,md}.
 */
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');
const { parseFlags } = require('../../libs/workload/dist');
const { root, provenance, writeResult } = require('./common');

const flags = parseFlags(process.argv.slice(2));
const list = (name, fallback) => (flags.get(name) ?? fallback).split(',').filter((x) => x !== '');
const builds = list('builds', `current=${path.join(root, 'libs/sim/dist/cli.js')}`).map((b) => {
  const [name, cli] = b.split('=');
  return { name, cli: path.resolve(cli) };
});
const traceDir = path.resolve(flags.get('traces') ?? path.join(os.tmpdir(), 'inlaid-sim-speed'));
const TASKS = list('tasks', '2,100,1000').map(Number);
const POLICIES = list('policies', 'fifo,fcfs-maxloras,mlfq,inlaid');
const MODELS = list('models', 'default,h200-served-s8.json');
const tag = flags.get('tag');
const REPEAT = Number(flags.get('repeat') ?? '1');

function trace(tasks) {
  const file = path.join(traceDir, `h1-${tasks}.jsonl`);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(traceDir, { recursive: true });
    const cli = path.join(root, 'libs/workload/dist/cli.js');
    execFileSync('node', [cli, '--tasks', `${tasks}`, '--rate', '50', '--cv', '2', '--alpha', '1', '--duration', '3600', '--seed', '1', '--out', file], { stdio: 'inherit' });
  }
  return file;
}

/** One timed run: CPU and wall seconds from /usr/bin/time, the simulator's JSON summary. */
function timed(cli, args) {
  const p = spawnSync('/usr/bin/time', ['-f', 'TIME %U %S %e', 'nice', '-n', '10', 'node', cli, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const line = p.stderr.split('\n').find((l) => l.startsWith('TIME '));
  if (p.status !== 0 || line === undefined) throw new Error(`${cli} ${args.join(' ')} failed: ${p.stderr}`);
  const [user, sys, wall] = line.slice(5).split(' ').map(Number);
  const summary = JSON.parse(p.stdout);
  return { user_s: user, sys_s: sys, cpu_s: user + sys, wall_s: wall, summary };
}

/** A summary without its wall time, for comparing builds. */
const strip = (s) => JSON.stringify({ ...s, sim_wall_s: undefined });

const rows = [];
let flip = false;
for (const model of MODELS) {
  for (const tasks of TASKS) {
    for (const policy of POLICIES) {
      const args = ['--trace', trace(tasks), '--policy', policy, '--json', ...(model === 'default' ? [] : ['--cost-model', path.join(root, 'libs/sim/calibration', model)])];
      for (let round = 0; round < REPEAT; round++) {
        const order = flip ? [...builds].reverse() : builds;
        flip = !flip;
        const runs = new Map(order.map((b) => [b.name, timed(b.cli, args)]));
        const first = strip(runs.get(builds[0].name).summary);
        for (const b of builds) {
          const r = runs.get(b.name);
          const s = r.summary;
          rows.push({ model, tasks, policy, build: b.name, round, user_s: r.user_s, sys_s: r.sys_s, cpu_s: r.cpu_s, wall_s: r.wall_s, steps: s.steps, finished: s.finished, slo_attainment: s.slo_attainment, throughput_tok_s: s.throughput_tok_s, same_summary_as_first_build: strip(s) === first });
          process.stderr.write(`${model} ${tasks} ${policy} ${b.name}: cpu ${r.cpu_s.toFixed(1)} s, wall ${r.wall_s.toFixed(1)} s, slo ${s.slo_attainment.toFixed(4)}, tok/s ${s.throughput_tok_s.toFixed(0)}\n`);
        }
      }
    }
  }
}

const { command, date, machine } = provenance('sim-speed.js');
const stem = `sim-speed-${date.slice(0, 10)}${tag === undefined ? '' : `-${tag}`}`;
const names = builds.map((b) => b.name);
const median = (xs) => {
  const ys = [...xs].sort((a, b) => a - b);
  return ys.length % 2 === 1 ? ys[(ys.length - 1) / 2] : (ys[ys.length / 2 - 1] + ys[ys.length / 2]) / 2;
};
const md = [
  `# Simulator speed: 1-hour trace at 50 req/s (${date.slice(0, 10)})`,
  '',
  `- command: \`${command}\``,
  `- date: ${date}; machine: ${machine}`,
  `- builds: ${builds.map((b) => `${b.name} = \`${path.relative(root, b.cli) || b.cli}\``).join(', ')}`,
  `- CPU = user + sys seconds of the simulator process (/usr/bin/time), every run at nice 10, one at a time, builds alternating; ${REPEAT === 1 ? 'one run each' : `median of ${REPEAT} runs each (all runs in the JSON)`}.`,
  '',
  `| cost model | tasks | policy | ${names.map((n) => `CPU s ${n}`).join(' | ')} | steps (${names.join(' / ')}) | SLO (${names.join(' / ')}) | tok/s (${names.join(' / ')}) | summary = ${names[0]} |`,
  `|---|---|---|${names.map(() => '---|').join('')}---|---|---|---|`,
];
for (const model of MODELS) {
  for (const tasks of TASKS) {
    for (const policy of POLICIES) {
      const runsOf = (n) => rows.filter((r) => r.model === model && r.tasks === tasks && r.policy === policy && r.build === n);
      const rs = names.map((n) => runsOf(n)[0]);
      const cpu = names.map((n) => median(runsOf(n).map((r) => r.cpu_s)).toFixed(1));
      md.push(`| ${model.replace('.json', '')} | ${tasks} | ${policy} | ${cpu.join(' | ')} | ${rs.map((r) => r.steps).join(' / ')} | ${rs.map((r) => r.slo_attainment.toFixed(4)).join(' / ')} | ${rs.map((r) => r.throughput_tok_s.toFixed(0)).join(' / ')} | ${names.every((n) => runsOf(n).every((r) => r.same_summary_as_first_build)) ? 'yes' : 'no'} |`);
    }
  }
}
writeResult(`${stem}.json`, { command, date, machine, builds, rows });
console.log(writeResult(`${stem}.md`, `${md.join('\n')}\n`));
