#!/usr/bin/env node
/**
 * Bounded open-loop load test on loopback: starts a tiny-model worker (1 CPU thread) and the built gateway
 * (apps/gateway/dist), sends POST /v1/completions at a fixed rate for a fixed time (at most MAX_IN_FLIGHT
 * outstanding; arrivals beyond that count as `shed`), samples the gateway's RSS every 5 s, and writes
 * bench/results/load-<date>[-tag].md.
 *
 *   node bench/load/load.mjs --rate 8 --seconds 600 [--max-tokens 16] [--tag x]
 *   node bench/load/load.mjs --ramp 4,8,12,16 --seconds 20     (one short step per rate, report only)
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(new URL('.', import.meta.url).pathname, '../..');
const PY = join(REPO, '.venv/bin/python');
const MAX_IN_FLIGHT = 64;

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const freePort = () =>
  new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

function makeFixture(root) {
  const code = `
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, 'workers/tests')
from factories import make_tiny_llama, make_random_adapter
root = sys.argv[1]
base = make_tiny_llama(root + '/model', seed=0)
make_random_adapter(root + '/adapters/sql', base, rank=8, alpha=16, targets=['q_proj', 'v_proj'], seed=1)
make_random_adapter(root + '/adapters/poet', base, rank=4, alpha=8, targets=['q_proj', 'v_proj'], seed=2)
`;
  execFileSync(PY, ['-c', code, root], { cwd: REPO, stdio: 'inherit' });
}

function startProcess(cmd, args, env, readyPattern) {
  const child = spawn(cmd, args, { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  return new Promise((ok, fail) => {
    const onData = (b) => {
      log += b.toString();
      if (readyPattern.test(log)) ok(child);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => fail(new Error(`${cmd} exited ${code}:\n${log.slice(-2000)}`)));
  });
}

const rssMiB = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};
const cpuSeconds = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 10 ms
};
const pct = (sorted, q) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);

async function runStep(url, rate, seconds, maxTokens, gatewayPid) {
  const lat = [];
  const errors = {};
  const samples = [];
  let sent = 0;
  let shed = 0;
  let inFlight = 0;
  const t0 = performance.now();
  const cpu0 = cpuSeconds(gatewayPid);
  const sampler = setInterval(() => samples.push({ t: (performance.now() - t0) / 1000, rss: rssMiB(gatewayPid), inFlight }), 5000);
  const one = async (i) => {
    inFlight++;
    const start = performance.now();
    try {
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: i % 2 ? 'sql' : 'poet', prompt: `Request ${i}: the capital of`, max_tokens: maxTokens, temperature: 0, ignore_eos: true }),
      });
      const body = await res.json();
      if (res.status !== 200 || body.usage?.completion_tokens !== maxTokens) errors[res.status] = (errors[res.status] ?? 0) + 1;
      else lat.push(performance.now() - start);
    } catch (err) {
      errors[err.code ?? 'network'] = (errors[err.code ?? 'network'] ?? 0) + 1;
    } finally {
      inFlight--;
    }
  };
  const pending = [];
  const total = Math.round(rate * seconds);
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (inFlight >= MAX_IN_FLIGHT) {
      shed++;
      continue;
    }
    sent++;
    pending.push(one(i));
  }
  await Promise.all(pending);
  clearInterval(sampler);
  samples.push({ t: (performance.now() - t0) / 1000, rss: rssMiB(gatewayPid), inFlight });
  const wall = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return {
    rate, seconds, sent, shed, ok: lat.length, errors, wall,
    achieved: lat.length / wall,
    p50: pct(lat, 0.5), p90: pct(lat, 0.9), p99: pct(lat, 0.99), max: lat[lat.length - 1] ?? NaN,
    gatewayCpuPct: (100 * (cpuSeconds(gatewayPid) - cpu0)) / wall,
    samples,
  };
}

function report(steps, maxTokens, tag) {
  const f = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');
  const lines = [
    `# Load test ${new Date().toISOString().slice(0, 10)}${tag ? ` (${tag})` : ''}`,
    '',
    `Loopback, tiny random Llama (workers/tests/factories.py) with two LoRA adapters, worker on 1 CPU thread,`,
    `gateway from apps/gateway/dist; POST /v1/completions, ${maxTokens} tokens each (ignore_eos), greedy, open loop,`,
    `at most ${MAX_IN_FLIGHT} in flight. Machine: 2 shared CPU cores. Command: \`node bench/load/load.mjs ${process.argv.slice(2).join(' ')}\`.`,
    '',
    '| target req/s | seconds | sent | ok | errors | shed | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | gateway CPU % | gateway RSS MiB (start -> end, max) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const s of steps) {
    const rss = s.samples.map((x) => x.rss);
    lines.push(`| ${s.rate} | ${s.seconds} | ${s.sent} | ${s.ok} | ${JSON.stringify(s.errors)} | ${s.shed} | ${s.achieved.toFixed(2)} | ${f(s.p50)} | ${f(s.p90)} | ${f(s.p99)} | ${f(s.max)} | ${s.gatewayCpuPct.toFixed(1)} | ${rss[0]?.toFixed(1)} -> ${rss[rss.length - 1]?.toFixed(1)}, ${Math.max(...rss).toFixed(1)} |`);
  }
  const last = steps[steps.length - 1];
  lines.push('', '## Gateway RSS over time (last step, every 5 s; every 6th sample shown)', '', '| t s | RSS MiB | in flight |', '|---|---|---|');
  last.samples.forEach((x, i) => {
    if (i % 6 === 0 || i === last.samples.length - 1) lines.push(`| ${x.t.toFixed(0)} | ${x.rss.toFixed(1)} | ${x.inFlight} |`);
  });
  return lines.join('\n') + '\n';
}

async function main() {
  const seconds = Number(arg('seconds', '60'));
  const maxTokens = Number(arg('max-tokens', '16'));
  const rates = (arg('ramp', null) ?? arg('rate', '4')).split(',').map(Number);
  const tag = arg('tag', '');
  const root = mkdtempSync(join(tmpdir(), 'inlaid-load-'));
  const children = [];
  const db = `inlaid_load_${process.pid}`;
  try {
    makeFixture(root);
    const wport = await freePort();
    const worker = await startProcess(PY, ['-m', 'inlaid_worker.server', '--model', `${root}/model`, '--adapters-dir', `${root}/adapters`,
      '--port', String(wport), '--kv-cache-bytes', String(32 << 20), '--worker-id', 'load'], { OMP_NUM_THREADS: '1', PYTHONUNBUFFERED: '1' }, /"event":"ready"/);
    children.push(worker);
    const port = await freePort();
    const gateway = await startProcess('node', ['apps/gateway/dist/main.js'], {
      PORT: String(port), GRPC_PORT: String(await freePort()), WORKER_ADDRS: `127.0.0.1:${wport}`,
      DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${db}`, INLAID_API_KEYS: '', INLAID_AUTH: '',
    }, /OpenAI API on/);
    children.push(gateway);
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 50 && !(await fetch(`${url}/readyz`)).ok; i++) await new Promise((r) => setTimeout(r, 100));
    await runStep(url, 2, 3, maxTokens, gateway.pid); // warm-up
    const steps = [];
    for (const rate of rates) {
      const s = await runStep(url, rate, seconds, maxTokens, gateway.pid);
      steps.push(s);
      console.log(JSON.stringify({ ...s, samples: undefined }));
    }
    const out = join(REPO, 'bench/results', `load-${new Date().toISOString().slice(0, 10)}${tag ? `-${tag}` : ''}.md`);
    writeFileSync(out, report(steps, maxTokens, tag));
    console.log(`wrote ${out}`);
  } finally {
    for (const c of children.reverse()) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1500));
    try {
      execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-qc', `DROP DATABASE IF EXISTS ${db}`]);
    } catch {
      /* the database may already be gone */
    }
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
