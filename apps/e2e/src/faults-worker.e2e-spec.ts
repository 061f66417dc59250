/**
 * A worker killed mid-stream, with a second worker up. Documented behaviour (generation.service.ts): a
 * request that already streamed output ends with a clean error (SSE error event / 503, gRPC UNAVAILABLE);
 * a request admitted but not yet started is retried transparently on the other worker. The gateway takes
 * the dead worker out within seconds and uses it again once it is back.
 */
import { RequestRecord } from '@inlaid/db';
import { rmSync } from 'node:fs';
import OpenAI from 'openai';
import { Harness, readyWorkers, startHarness, waitFor, workerSnap } from './support/gateway-harness';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';

jest.setTimeout(240_000);

const LONG = { max_tokens: 2000, ignore_eos: true } as object;
let fixture: TinyFixture;
let portA: number;
let a: WorkerProcess;
let b: WorkerProcess;
let h: Harness;
let client: OpenAI;

const workers = () => readyWorkers(h);
const snapOf = (addr: string) => workerSnap(h, addr);

beforeAll(async () => {
  fixture = await makeTinyFixture();
  portA = await freePort();
  // A runs one sequence at a time, so a second request admitted there waits without any output.
  [a, b] = await Promise.all([startWorker(fixture, portA, 120_000, ['--max-num-seqs', '1']), startWorker(fixture, await freePort())]);
  h = await startHarness({ WORKER_ADDRS: `${a.addr},${b.addr}` });
  client = new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  await waitFor(async () => ((await workers()).every((w) => w.ready) ? true : undefined), 15_000, 'both workers ready');
});

afterAll(async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await h?.close();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

it('fails the streaming request cleanly, retries the not-started one on the other worker, and takes A out', async () => {
  // Ties go to the first worker: stream 1 -> A, stream 2 -> B, the queued request -> A (behind stream 1).
  const s1 = await client.completions.create({ model: 'sql', prompt: 'one', stream: true, temperature: 0, ...LONG });
  const it1 = s1[Symbol.asyncIterator]();
  await it1.next();
  const s2 = await client.completions.create({ model: 'poet', prompt: 'two', stream: true, temperature: 0, ...LONG });
  const it2 = s2[Symbol.asyncIterator]();
  await it2.next();
  const queued = client.completions.create({ model: 'sql', prompt: 'three', max_tokens: 8, temperature: 0 });
  await waitFor(async () => ((await snapOf(a.addr)).inFlight === 2 ? true : undefined), 5000, 'queued request on A');

  const killedAt = performance.now();
  await a.kill();
  const drain = async () => {
    for (;;) if ((await it1.next()).done === true) return;
  };
  const streamErr = await drain().then(() => null, (e: unknown) => e);
  expect(streamErr).toBeInstanceOf(OpenAI.APIError);
  expect((streamErr as Error).message).toMatch(/unavailable|disconnected/i);
  expect(performance.now() - killedAt).toBeLessThan(3000);

  const retried = await queued; // transparently finished on B
  expect(retried.choices[0]?.finish_reason).toBe('length');
  expect(retried.usage?.completion_tokens).toBe(8);

  await waitFor(async () => ((await snapOf(a.addr)).ready ? undefined : true), 3000, 'A taken out');
  const during = await client.completions.create({ model: 'poet', prompt: 'x', max_tokens: 4, temperature: 0 });
  expect(during.usage?.completion_tokens).toBe(4);
  await s2.controller.abort();
  const rows = await waitFor(async () => {
    const r = await h.db.getRepository(RequestRecord).findOneBy({ id: retried.id });
    return r ?? undefined;
  }, 3000, 'record of the retried request');
  expect(rows.worker).toBe(b.addr);
  expect(rows.status).toBe('completed');
});

it('uses A again once it is back', async () => {
  a = await startWorker(fixture, portA, 120_000, ['--max-num-seqs', '1']);
  const t0 = performance.now();
  await waitFor(async () => ((await snapOf(a.addr)).ready ? true : undefined), 10_000, 'A back');
  expect(performance.now() - t0).toBeLessThan(5000);
  const [x, y] = await Promise.all([
    client.completions.create({ model: 'sql', prompt: 'x', max_tokens: 64, temperature: 0, ignore_eos: true } as never),
    client.completions.create({ model: 'sql', prompt: 'y', max_tokens: 64, temperature: 0, ignore_eos: true } as never),
  ]);
  const rows = await waitFor(async () => {
    const r = await h.db.getRepository(RequestRecord).findBy([{ id: (x as { id: string }).id }, { id: (y as { id: string }).id }]);
    return r.length === 2 ? r : undefined;
  }, 3000, 'records');
  expect(rows.map((r) => r.worker)).toContain(a.addr);
  expect(rows.every((r) => r.status === 'completed')).toBe(true);
});
