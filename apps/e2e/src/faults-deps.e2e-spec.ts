/**
 * Redis and Postgres faults with a real worker. Redis is a private redis-server (never the shared one);
 * the gateway reaches Postgres through a TCP proxy the test cuts. Expected: inference keeps serving
 * (limits fail open without Redis; known keys are served from the key cache without Postgres), request
 * records are buffered while Postgres is away and all written once it is back.
 */
import { RequestRecord } from '@inlaid/db';
import { rmSync } from 'node:fs';
import OpenAI from 'openai';
import { createApiKey } from '../../gateway/src/auth/api-key-repo';
import { RecordsService } from '../../gateway/src/records/records.service';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { freePort } from './support/ports';
import { makeTinyFixture, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';
import { PrivateRedis, startPrivateRedis } from './support/redis-server';
import { startTcpProxy, TcpProxy } from './support/tcp-proxy';
import { DataSource } from 'typeorm';

jest.setTimeout(240_000);

let fixture: TinyFixture;
let worker: WorkerProcess;
let redis: PrivateRedis;
let proxy: TcpProxy;
let h: Harness;
let direct: DataSource;
let key: string;
let tightKey: string;

beforeAll(async () => {
  fixture = await makeTinyFixture();
  [worker, redis, proxy] = await Promise.all([startWorker(fixture, await freePort()), startPrivateRedis(await freePort()), startTcpProxy(5432, await freePort())]);
  h = await startHarness({ WORKER_ADDRS: worker.addr, REDIS_URL: redis.url, INLAID_AUTH: 'required' }, proxy.port);
  direct = new DataSource({ type: 'postgres', url: h.databaseUrl.replace(`:${proxy.port}/`, ':5432/'), entities: [RequestRecord] });
  await direct.initialize();
  key = (await createApiKey(h.db, { name: 'svc', scopes: ['inference'], rateLimitRpm: 10_000, concurrencyLimit: 4 })).key;
  tightKey = (await createApiKey(h.db, { name: 'tight', scopes: ['inference'], rateLimitRpm: 2, concurrencyLimit: null })).key;
  await waitFor(async () => ((await fetch(`${h.gateway.httpUrl}/readyz`)).ok ? true : undefined), 10_000, 'readyz');
});

afterAll(async () => {
  await proxy?.restore().catch(() => undefined);
  await direct?.destroy();
  await worker?.kill();
  await h?.close();
  await redis?.kill();
  await proxy?.close();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

const clientFor = (k: string) => new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: k, maxRetries: 0, timeout: 30_000 });
const complete = (k: string) => clientFor(k).completions.create({ model: 'sql', prompt: 'hi', max_tokens: 4, temperature: 0 });
const redisUp = async () => ((await (await fetch(`${h.gateway.httpUrl}/readyz`)).json()) as { redis: boolean }).redis;

it('keeps serving while Redis is down (limits fail open) and enforces limits again once it is back', async () => {
  await complete(tightKey);
  await complete(tightKey);
  await expect(complete(tightKey)).rejects.toBeInstanceOf(OpenAI.RateLimitError);
  await redis.kill();
  await waitFor(async () => ((await redisUp()) ? undefined : true), 5000, 'gateway sees redis down');
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: 6 }, () => complete(tightKey)));
  expect(results.every((r) => r.usage?.completion_tokens === 4)).toBe(true);
  expect(performance.now() - t0).toBeLessThan(10_000);
  await redis.start(); // a fresh, empty redis: buckets start full again
  await waitFor(async () => ((await redisUp()) ? true : undefined), 10_000, 'gateway reconnects to redis');
  await complete(tightKey);
  await complete(tightKey);
  await expect(complete(tightKey)).rejects.toBeInstanceOf(OpenAI.RateLimitError);
});

it('keeps serving while Postgres is unreachable and writes every buffered record afterwards', async () => {
  const records = h.gateway.app.get(RecordsService);
  await complete(key); // the key is now in the authenticator's cache
  await proxy.cut();
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push((await complete(key)).id);
  await new Promise((r) => setTimeout(r, 1500)); // at least one failed flush
  expect(records.buffered).toBeGreaterThanOrEqual(8);
  expect(await direct.getRepository(RequestRecord).countBy(ids.map((id) => ({ id })))).toBe(0);
  await proxy.restore();
  const written = await waitFor(async () => {
    const n = await direct.getRepository(RequestRecord).countBy(ids.map((id) => ({ id })));
    return n === ids.length ? n : undefined;
  }, 15_000, 'buffered records written');
  expect(written).toBe(8);
  expect(records.buffered).toBe(0);
});
