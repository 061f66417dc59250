/**
 * Gateway-side scheduling on real traffic: a real Python worker (tiny random Llama, three random LoRA
 * adapters) behind the real gateway. With INLAID_POLICY=inlaid a burst of 20 requests over 3 adapters queues
 * in the gateway (only 4 admitted at a time), every request completes correctly and the queue drains. With
 * fcfs-maxloras and INLAID_MAX_LORAS=1 no two adapters ever run on the worker at once (checked on the
 * request timelines recorded in Postgres); the same check fails for inlaid, so it can tell the policies apart.
 */
import { RequestRecord } from '@inlaid/db';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { SchedulingService } from '../../gateway/src/scheduling/scheduling.service';
import { Harness, startHarness, waitFor } from './support/gateway-harness';
import { freePort } from './support/ports';
import { runPython, startWorker, TinyFixture, WorkerProcess } from './support/python-worker';

jest.setTimeout(240_000);

const ADAPTERS = ['sql', 'poet', 'chat'] as const;
const MAKE = `
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, 'workers/tests')
from factories import make_tiny_llama, make_random_adapter
root = sys.argv[1]
base = make_tiny_llama(root + '/model', seed=0)
for i, name in enumerate(['sql', 'poet', 'chat']):
    make_random_adapter(root + '/adapters/' + name, base, rank=4 + 4 * (i % 2), alpha=16, targets=['q_proj', 'v_proj'], seed=i + 1)
`;

let fixture: TinyFixture;
let worker: WorkerProcess;

beforeAll(async () => {
  const root = mkdtempSync(join(tmpdir(), 'inlaid-sched-'));
  await runPython(MAKE, [root], 120_000);
  fixture = { root, modelDir: join(root, 'model'), adaptersDir: join(root, 'adapters'), adapters: [...ADAPTERS] };
  worker = await startWorker(fixture, await freePort());
});

afterAll(async () => {
  await worker?.kill();
  if (fixture !== undefined) rmSync(fixture.root, { recursive: true, force: true });
});

async function withGateway<T>(env: Record<string, string>, body: (h: Harness, client: OpenAI) => Promise<T>): Promise<T> {
  const h = await startHarness({ WORKER_ADDRS: worker.addr, INLAID_SCHED_MAX_ROWS: '4', ...env });
  try {
    await waitFor(async () => ((await fetch(`${h.gateway.httpUrl}/readyz`)).ok ? true : undefined), 10_000, 'readyz');
    const sched = h.gateway.app.get(SchedulingService);
    await waitFor(async () => (sched.dispatcher.workerCount === 1 ? true : undefined), 10_000, 'worker registered with the scheduler');
    return await body(h, new OpenAI({ baseURL: `${h.gateway.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 }));
  } finally {
    await h.close();
  }
}

/** A burst of `n` greedy requests round-robin over the adapters; max_tokens varies so lengths differ. */
function burst(client: OpenAI, n: number) {
  return Array.from({ length: n }, (_, i) => {
    const model = ADAPTERS[i % ADAPTERS.length];
    const maxTokens = 6 + (i % 4) * 4;
    const body = { model, prompt: `request ${i}: the quick brown fox`, max_tokens: maxTokens, temperature: 0, ignore_eos: true };
    return client.completions.create(body as never).then((r) => ({ i, model, maxTokens, body, res: r as unknown as OpenAI.Completion }));
  });
}

async function records(h: Harness, ids: readonly string[]): Promise<RequestRecord[]> {
  return waitFor(async () => {
    const rows = await h.db.getRepository(RequestRecord).findBy(ids.map((id) => ({ id })));
    return rows.length === ids.length ? rows : undefined;
  }, 5000, 'request records');
}

/** Pairs of requests of different tasks whose [first token, finish] intervals overlap at the gateway. */
function crossTaskOverlaps(rows: readonly RequestRecord[]): number {
  let n = 0;
  for (const x of rows) {
    for (const y of rows) {
      if (x.id >= y.id || x.task === y.task) continue;
      const [xs, xe, ys, ye] = [x.firstToken, x.finish, y.firstToken, y.finish].map((d) => (d as Date).getTime());
      if (xs < ye && ys < xe) n++;
    }
  }
  return n;
}

it('inlaid: a burst of 20 over 3 adapters queues in the gateway, completes correctly and drains', async () => {
  await withGateway({ INLAID_POLICY: 'inlaid' }, async (h, client) => {
    const sched = h.gateway.app.get(SchedulingService);
    let maxWaiting = 0;
    const sampler = setInterval(() => (maxWaiting = Math.max(maxWaiting, sched.dispatcher.waiting)), 5);
    const t0 = performance.now();
    const done = await Promise.all(burst(client, 20));
    clearInterval(sampler);
    const wallS = (performance.now() - t0) / 1000;
    expect(maxWaiting).toBeGreaterThan(0); // the gateway queued: only 4 rows per worker
    for (const d of done) {
      expect(d.res.choices[0]?.finish_reason).toBe('length');
      expect(d.res.usage?.completion_tokens).toBe(d.maxTokens);
    }
    expect(sched.dispatcher.inFlight).toBe(0);
    expect(sched.dispatcher.waiting).toBe(0);
    // Batched under the scheduler == alone (greedy): spot-check one request per adapter.
    for (const d of done.slice(0, 3)) {
      const alone = (await client.completions.create(d.body as never)) as unknown as OpenAI.Completion;
      expect(alone.choices[0]?.text).toBe(d.res.choices[0]?.text);
    }
    const rows = await records(h, done.map((d) => d.res.id));
    expect(rows.every((r) => r.status === 'completed' && r.worker === worker.addr)).toBe(true);
    expect(crossTaskOverlaps(rows)).toBeGreaterThan(0); // inlaid mixes adapters in one batch
    process.stdout.write(`inlaid burst of 20: ${wallS.toFixed(2)} s, max gateway queue ${maxWaiting}\n`);
  });
});

it('fcfs-maxloras with INLAID_MAX_LORAS=1 never runs two adapters on the worker at once', async () => {
  await withGateway({ INLAID_POLICY: 'fcfs-maxloras', INLAID_MAX_LORAS: '1' }, async (h, client) => {
    const done = await Promise.all(burst(client, 12));
    expect(done.every((d) => d.res.usage?.completion_tokens === d.maxTokens)).toBe(true);
    const rows = await records(h, done.map((d) => d.res.id));
    expect(new Set(rows.map((r) => r.task)).size).toBe(3);
    expect(crossTaskOverlaps(rows)).toBe(0);
    expect(h.gateway.app.get(SchedulingService).dispatcher.inFlight).toBe(0);
  });
});

it('a client that disconnects while its request waits in the gateway queue never reaches the worker', async () => {
  await withGateway({ INLAID_POLICY: 'fifo', INLAID_SCHED_MAX_ROWS: '1' }, async (h, client) => {
    const sched = h.gateway.app.get(SchedulingService);
    // One long request holds the only row; the second waits in the gateway queue, then its client leaves.
    // The holder asks for nearly the whole context and is cancelled at the end, so it cannot finish before the
    // second request reaches the queue, however slow the machine is.
    const holder = new AbortController();
    const long = client.completions
      .create({ model: 'sql', prompt: 'hold the row', max_tokens: 240, temperature: 0, ignore_eos: true } as never, { signal: holder.signal })
      .catch((e: unknown) => e);
    await waitFor(async () => (sched.dispatcher.inFlight === 1 ? true : undefined), 10_000, 'first request admitted');
    const leaving = new AbortController();
    const queued = fetch(`${h.gateway.httpUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'leaves-while-queued' },
      body: JSON.stringify({ model: 'poet', prompt: 'never admitted', max_tokens: 8, stream: true }),
      signal: leaving.signal,
    }).catch((e: unknown) => e);
    await waitFor(async () => (sched.dispatcher.waiting === 1 ? true : undefined), 10_000, 'second request queued');
    leaving.abort();
    await queued;
    await waitFor(async () => (sched.dispatcher.waiting === 0 ? true : undefined), 5_000, 'queue emptied by the disconnect');
    holder.abort();
    await long;
    const rows = await waitFor(async () => {
      const all = await h.db.getRepository(RequestRecord).find();
      return all.length === 2 ? all : undefined;
    }, 5000, 'both records');
    const dropped = rows.find((r) => r.task === 'poet');
    expect(dropped?.status).toBe('aborted');
    expect(dropped?.worker ?? null).toBeNull(); // never admitted to a worker
    expect(dropped?.firstToken ?? null).toBeNull();
  });
});
