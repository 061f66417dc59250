/**
 * Two real workers behind one gateway, worker B behind a TCP proxy whose cut takes its link down while it keeps
 * running (and keeps its adapters). An adapter rewritten in place: while B's link is down the task is unloaded and
 * loaded again from the same path with new files; when B's link is back, the gateway's adapter catch-up sees B hold
 * the task from the same path with another content digest (WorkerInfo.adapter_digests against the job's
 * task_jobs.adapter_digest) and replaces it, and B then serves the new weights. Before, the paths compared equal and B
 * served the old weights. And /v1/models does not list a task that B still holds only as stale (unloaded while its
 * link was down) while B's catch-up holds it.
 */
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TaskJob } from '@inlaid/db';
import OpenAI from 'openai';
import { TaskStore } from '../../gateway/src/tasks/task-store.service';
import { WorkersService } from '../../gateway/src/workers/workers.service';
import { Harness, startHarness, waitFor, workerSnap } from './support/gateway-harness';
import { getInfo, workerClient } from './support/grpc-clients';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';
import { jsonCall } from './support/task-http';
import { startTcpProxy, TcpProxy } from './support/tcp-proxy';

jest.setTimeout(120_000);

let fixture: TinyFixture;
let root: string;
let a: WorkerProcess;
let b: WorkerProcess;
let proxy: TcpProxy;
let bAddr: string;
let h: Harness;
let client: OpenAI;

const api = (method: string, path: string, body?: unknown) => jsonCall(h.gateway.httpUrl, method, path, body);
const ready = async (addr: string): Promise<boolean> => (await workerSnap(h, addr))?.ready === true;

/** What the worker at `addr` itself reports (asked directly): adapter name -> [path, digest]. */
async function held(addr: string): Promise<Record<string, [string, string]>> {
  const c = workerClient(addr);
  try {
    const info = await getInfo(c);
    return Object.fromEntries(Object.entries(info.adapterPaths).map(([n, p]) => [n, [p, info.adapterDigests[n] ?? '']]));
  } finally {
    c.close();
  }
}

async function complete(model: string): Promise<string> {
  const out = await client.completions.create({ model, prompt: 'The capital of', max_tokens: 16, temperature: 0, ignore_eos: true } as never);
  return (out as OpenAI.Completion).choices[0]?.text ?? '';
}

async function cutB(): Promise<void> {
  await proxy.cut();
  await waitFor(async () => (!(await ready(bAddr)) ? true : undefined), 15_000, "B's link down");
}

beforeAll(async () => {
  fixture = await makeTinyFixture();
  root = mkdtempSync(join(tmpdir(), 'inlaid-rewrite-'));
  cpSync(join(fixture.adaptersDir, 'sql'), join(root, 'rw'), { recursive: true });
  cpSync(join(fixture.adaptersDir, 'sql'), join(root, 'stale'), { recursive: true });
  const portB = await freePort();
  [a, b] = await Promise.all([startWorker(fixture, await freePort()), startWorker(fixture, portB)]);
  proxy = await startTcpProxy(portB, await freePort());
  bAddr = `127.0.0.1:${proxy.port}`;
  h = await startHarness({ WORKER_ADDRS: `${a.addr},${bAddr}`, INLAID_ADAPTER_ROOT: root });
  client = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  await waitFor(async () => ((await ready(a.addr)) && (await ready(bAddr)) ? true : undefined), 15_000, 'both workers ready');
});

afterAll(async () => {
  await proxy?.close();
  await Promise.all([a?.kill(), b?.kill()]);
  await h?.close();
  if (root !== undefined) rmSync(root, { recursive: true, force: true });
});

it('replaces the adapter a worker kept from before an in-place rewrite of its files, and that worker serves the new one', async () => {
  const path = join(root, 'rw');
  expect((await api('POST', '/v1/load_lora_adapter', { lora_name: 'rw', lora_path: path })).status).toBe(200);
  const [fromPath, oldDigest] = (await held(b.addr))['rw'] ?? [];
  expect(fromPath).toBe(path);
  const oldText = await complete('rw');

  await cutB(); // B keeps running, and keeps rw's old weights
  expect((await api('POST', '/v1/unload_lora_adapter', { lora_name: 'rw' })).status).toBe(200); // A only
  cpSync(join(fixture.adaptersDir, 'poet'), path, { recursive: true }); // new files at the same path
  expect((await api('POST', '/v1/load_lora_adapter', { lora_name: 'rw', lora_path: path })).status).toBe(200); // A only
  const [, newDigest] = (await held(a.addr))['rw'] ?? [];
  expect(newDigest).toMatch(/^[0-9a-f]{64}$/);
  expect(newDigest).not.toBe(oldDigest);
  const jobs = await h.db.getRepository(TaskJob).find({ where: { task: 'rw' }, order: { createdAt: 'ASC' } });
  expect(jobs.map((j) => [j.status, j.adapterDigest])).toEqual([['deleted', oldDigest], ['serving', newDigest]]); // what each load loaded
  const newText = await complete('rw'); // A serves the new weights
  expect(newText).not.toBe(oldText); // (else this test could not tell the two apart)
  expect((await held(b.addr))['rw']).toEqual([path, oldDigest]); // B, unreachable, still holds the old ones

  await proxy.restore();
  // before: B listed rw from the same path and kept serving the old weights
  await waitFor(async () => ((await held(b.addr))['rw']?.[1] === newDigest ? true : undefined), 20_000, 'B caught up on rw');
  expect((await held(b.addr))['rw']).toEqual([path, newDigest]);
  await waitFor(async () => ((await ready(bAddr)) ? true : undefined), 15_000, 'B ready');
  await a.kill(); // B alone serves rw now
  await waitFor(async () => (!(await ready(a.addr)) ? true : undefined), 15_000, 'A gone');
  expect(await complete('rw')).toBe(newText);
  a = await startWorker(fixture, Number(a.addr.split(':')[1]));
  await waitFor(async () => ((await ready(a.addr)) ? true : undefined), 15_000, 'A back');
});

it('does not list in /v1/models a task a worker holds only as stale while its catch-up holds it', async () => {
  expect((await api('POST', '/v1/load_lora_adapter', { lora_name: 'stale', lora_path: join(root, 'stale') })).status).toBe(200);
  await cutB();
  expect((await api('POST', '/v1/unload_lora_adapter', { lora_name: 'stale' })).status).toBe(200); // A only
  const listed = async (): Promise<string[]> => ((await client.models.list()).data as Array<{ id: string }>).map((m) => m.id);
  expect(await listed()).not.toContain('stale');

  // the task's lock held (as a slow DELETE or load elsewhere would): B's catch-up cannot unload it yet, and holds it
  let release!: () => void;
  let entered!: () => void;
  const inLock = new Promise<void>((r) => (entered = r));
  const lock = h.gateway.app.get(TaskStore).locked('stale', () => new Promise<void>((r) => ((release = r), entered())));
  await inLock;
  try {
    await proxy.restore();
    await waitFor(async () => ((await ready(bAddr)) ? true : undefined), 15_000, 'B back');
    // past the first database read of B's catch-up: its hold narrowed from every adapter to the names to change, stale
    // among them (the lock keeps it from being unloaded yet)
    const workers = h.gateway.app.get(WorkersService);
    await waitFor(async () => {
      const c = workers.connections().find((w) => w.addr === bAddr);
      return c !== undefined && c.adapterHold !== 'all' && c.pendingFor('stale') ? true : undefined;
    }, 15_000, "B's hold narrowed to stale");
    expect(Object.keys(await held(b.addr))).toContain('stale'); // B still lists it
    expect(await listed()).not.toContain('stale'); // before: listed (a deleted task, served by no caught-up worker)
    expect(await listed()).toEqual(expect.arrayContaining(['rw', 'sql', 'poet'])); // B's others, and A's, still listed
  } finally {
    release();
    await lock;
  }
  await waitFor(async () => (!Object.keys(await held(b.addr)).includes('stale') ? true : undefined), 20_000, 'stale unloaded from B');
});
