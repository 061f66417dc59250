/**
 * One re-quantization for two workers that share a checkpoint store: two real Python workers serve the
 * tiny model's MLGPTQ checkpoint (same --checkpoint, hence the same store), the real gateway onboards a task.
 * The first worker in WORKER_ADDRS quantizes and stages each layer; the other swaps the staged layers in.
 * Checked: one quantizer run in all (the workers' counters and the store's staging runs), both workers end
 * at the same version with bit-identical weights (WeightsDigest), and a request sent straight to either
 * worker is served with the new task, token for token the same. Then the quantizer is killed in the middle
 * of the next run, right after it staged its first layer (its quantizer is paced to half of the wall time,
 * INLAID_QUANTIZER_MAX_SHARE, so it pauses there): the other worker, which was following, takes the run over
 * once the dead one's lease in the store runs out (INLAID_STAGING_LEASE_S, shortened here) and resumes it,
 * reusing the layers the dead one staged (its manifest names the dead run and the reused layers), the task
 * goes active, and the first worker, restarted, serves that version with the same weights.
 */
import { credentials, Metadata, ServiceError } from '@grpc/grpc-js';
import { worker } from '@inlaid/proto';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { getInfo, workerClient } from './support/grpc-clients';
import { Harness, startHarness, waitFor, workerSnap } from './support/gateway-harness';
import { CALIBRATION, makeOnboardFixture, OnboardFixture } from './support/onboard-fixture';
import { freePort } from './support/ports';
import { startWorker, WorkerProcess } from './support/python-worker';

jest.setTimeout(180_000);

let fx: OnboardFixture;
let portA: number;
let a: WorkerProcess;
let b: WorkerProcess;
let h: Harness;

const store = () => join(fx.root, 'ckpt-versions'); // the default store of --checkpoint <root>/ckpt

const LEASE_ENV = 'INLAID_STAGING_LEASE_S';
const SHARE_ENV = 'INLAID_QUANTIZER_MAX_SHARE';
const envBefore = { [LEASE_ENV]: process.env[LEASE_ENV], [SHARE_ENV]: process.env[SHARE_ENV] };

/** Worker A: after each layer its quantizer rests as long as it worked, so the kill below lands between two layers. */
function startA(): Promise<WorkerProcess> {
  process.env[SHARE_ENV] = '0.5'; // read when the worker process is spawned (synchronously, below)
  try {
    return startWorker(fx, portA, 120_000, ['--checkpoint', fx.checkpoint]);
  } finally {
    if (envBefore[SHARE_ENV] === undefined) delete process.env[SHARE_ENV];
    else process.env[SHARE_ENV] = envBefore[SHARE_ENV];
  }
}

beforeAll(async () => {
  process.env[LEASE_ENV] = '4'; // read by the workers started below
  fx = await makeOnboardFixture();
  portA = await freePort();
  [a, b] = await Promise.all([startA(), startWorker(fx, await freePort(), 120_000, ['--checkpoint', fx.checkpoint])]);
  h = await startHarness({
    WORKER_ADDRS: `${a.addr},${b.addr}`, INLAID_ADAPTER_ROOT: fx.adapterRoot, INLAID_DATA_DIR: fx.dataDir,
    INLAID_QUEUE_PREFIX: `e2e${randomBytes(4).toString('hex')}`,
  });
  await waitFor(async () => ((await workerSnap(h, a.addr)).ready && (await workerSnap(h, b.addr)).ready ? true : undefined), 15_000, 'both workers ready');
});

afterAll(async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await h?.close();
  if (fx !== undefined) rmSync(fx.root, { recursive: true, force: true });
  for (const [k, v] of Object.entries(envBefore)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${h.gateway.httpUrl}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function complete(model: string): Promise<any> {
  const r = await api('POST', '/v1/completions', { model, prompt: 'The capital of', max_tokens: 4, temperature: 0, ignore_eos: true });
  expect(r.status).toBe(200);
  return r.json;
}

function untilActive(name: string): Promise<any> {
  return waitFor(async () => {
    const r = await api('GET', `/v1/tasks/${name}`);
    if (r.json?.status === 'failed') throw new Error(`task ${name} failed: ${r.json.error}`);
    return r.json?.status === 'active' ? r.json : undefined;
  }, 90_000, `task ${name} active`);
}

async function checkpointOf(addr: string): Promise<worker.CheckpointStatus> {
  const c = workerClient(addr);
  try {
    return (await getInfo(c)).checkpoint as worker.CheckpointStatus;
  } finally {
    c.close();
  }
}

async function digestOf(addr: string): Promise<worker.DigestResponse> {
  const c = workerClient(addr);
  try {
    return await new Promise((res, rej) => c.weightsDigest({}, new Metadata(), (e: ServiceError | null, d: worker.DigestResponse) => (e ? rej(e) : res(d))));
  } finally {
    c.close();
  }
}

/** A greedy completion sent straight to one worker (Prepare, then Admit on a Session); its token ids. */
async function completeOn(addr: string, model: string): Promise<number[]> {
  const c = new worker.WorkerClient(addr, credentials.createInsecure());
  try {
    const sampling = { maxTokens: 8, temperature: 0, stop: [], stopTokenIds: [], ignoreEos: true };
    const prepared = await new Promise<worker.PrepareResponse>((res, rej) =>
      c.prepare({ model, prompt: 'The capital of', messages: [], sampling, tools: '' }, (e: ServiceError | null, r: worker.PrepareResponse) => (e ? rej(e) : res(r))));
    const session = c.session();
    const tokens: number[] = [];
    await new Promise<void>((res, rej) => {
      session.on('data', (ev: worker.WorkerEvent) => {
        if (ev.kind?.$case === 'error') rej(new Error(ev.kind.value.message));
        if (ev.kind?.$case !== 'delta') return;
        tokens.push(...ev.kind.value.tokenIds);
        if (ev.kind.value.finishReason !== 0) res();
      });
      session.on('error', rej);
      session.write({ kind: { $case: 'admit', value: { requestId: `direct-${randomBytes(4).toString('hex')}`, model, promptTokenIds: prepared.promptTokenIds, sampling } } });
    });
    session.cancel();
    return tokens;
  } finally {
    c.close();
  }
}

interface StagedRun {
  version: number;
  run_id: string;
  owner: string;
  status: string;
  layers: Record<string, unknown>;
  resumed_from: string;
  reused: number[];
}

function stagedRuns(): StagedRun[] {
  return readdirSync(store())
    .filter((d) => d.endsWith('.staging'))
    .map((d) => JSON.parse(readFileSync(join(store(), d, 'manifest.json'), 'utf8')));
}

function stagedRun(version: number): StagedRun | undefined {
  const path = join(store(), `v${String(version).padStart(4, '0')}.staging`, 'manifest.json');
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined;
}

it('re-quantizes once for both workers; both end at the new version, bit-identical, serving the task', async () => {
  const [beforeA, beforeB] = await Promise.all([digestOf(a.addr), digestOf(b.addr)]);
  expect(beforeA.digest).toBe(beforeB.digest);
  const post = await api('POST', '/v1/tasks', { name: 'newtask', adapter: { path: 'newtask' }, calibration: CALIBRATION });
  expect(post.status).toBe(202);
  const active = await untilActive('newtask');

  expect(active.checkpoint_version).toBe(1);
  expect(active.progress.quantizer).toBe(a.addr);
  expect(active.progress.layers_done).toBe(2);
  expect(active.progress.workers[a.addr]).toMatchObject({ role: 'quantizer', stage: 'done', layersDone: 2, checkpointVersion: 1 });
  expect(active.progress.workers[b.addr]).toMatchObject({ role: 'follower', stage: 'done', layersDone: 2, numLayers: 2, checkpointVersion: 1 });

  const [ca, cb] = await Promise.all([checkpointOf(a.addr), checkpointOf(b.addr)]);
  expect([ca.version, cb.version]).toEqual([1, 1]);
  expect(ca.storeId).toBe(cb.storeId);
  expect(ca.quantizerRuns + cb.quantizerRuns).toBe(1); // one quantizer run in all
  expect(ca.quantizerRuns).toBe(1);
  const runs = stagedRuns();
  expect(runs).toHaveLength(1);
  expect(runs[0]).toMatchObject({ version: 1, status: 'done' });
  expect(Object.keys(runs[0]?.layers ?? {})).toEqual(['0', '1']);

  const [afterA, afterB] = await Promise.all([digestOf(a.addr), digestOf(b.addr)]);
  expect(afterA.checkpointVersion).toBe(1);
  expect(afterB.checkpointVersion).toBe(1);
  expect(afterA.layers).toEqual(afterB.layers); // bit-identical, layer by layer
  expect(afterA.digest).not.toBe(beforeA.digest);

  const [onA, onB] = await Promise.all([completeOn(a.addr, 'newtask'), completeOn(b.addr, 'newtask')]);
  expect(onA).toHaveLength(8);
  expect(onB).toEqual(onA);
});

it('fails over mid-run: the follower resumes the run from the staged layers, the task goes active, the restarted quantizer serves it', async () => {
  const post = await api('POST', '/v1/tasks', { name: 'second', adapter: { path: 'second' }, calibration: CALIBRATION });
  expect(post.status).toBe(202);
  const layerStaged = () => {
    const m = stagedRun(2);
    return m !== undefined && Object.keys(m.layers).length > 0 ? m : undefined;
  };
  await waitFor(async () => layerStaged(), 60_000, 'A staging a layer of v2');
  await a.kill(); // mid-run (its quantizer child stops at the broken pipe); B, following, takes over after the lease
  const dead = stagedRun(2) as StagedRun; // what A left behind
  expect(dead.status).toBe('running');
  const deadLayers = Object.keys(dead.layers).map(Number).sort();
  expect(deadLayers.length).toBeGreaterThan(0);

  const active = await untilActive('second');
  expect(active.checkpoint_version).toBe(2);
  expect(active.progress.quantizer).toBe(b.addr);
  const cb = await checkpointOf(b.addr);
  expect([cb.version, cb.quantizerRuns]).toEqual([2, 1]);
  expect(stagedRuns().map((r) => [r.version, r.status]).sort()).toEqual([[1, 'done'], [2, 'done']]);
  const resumed = stagedRun(2) as StagedRun; // B resumed A's run: A's staged layers kept (same files), not re-quantized
  expect(resumed.owner).not.toBe(dead.owner);
  expect(resumed.resumed_from).toBe(dead.run_id);
  expect(resumed.reused).toEqual(deadLayers);
  for (const l of deadLayers) expect(resumed.layers[String(l)]).toEqual(dead.layers[String(l)]);
  expect(Object.keys(resumed.layers).sort()).toEqual(['0', '1']);
  expect((await complete('second')).usage.completion_tokens).toBe(4);

  a = await startA();
  await waitFor(async () => ((await workerSnap(h, a.addr)).ready ? true : undefined), 15_000, 'A back');
  const ca = await checkpointOf(a.addr);
  expect([ca.version, ca.quantizerRuns]).toEqual([2, 0]); // loaded the published v2 at start
  const [da, db] = await Promise.all([digestOf(a.addr), digestOf(b.addr)]);
  expect(da.layers).toEqual(db.layers);
  expect(existsSync(join(store(), 'current.json'))).toBe(true);
});
