/**
 * A request for a task deleted while a worker still drains its adapter (DELETE answered, the busy worker's catch-up
 * holding the name until its requests in flight finish), end to end through GenerationService, the real
 * WorkersService.pick, SchedulingService and AdapterCatchUp, over real Postgres and real grpc-js fake workers
 * (testing/adapter-fake-worker.ts, whose Prepare answers NOT_FOUND for a model it does not list, as a worker does).
 * Before: the request waited for the drain (catchUpWaitMs, 30 s) and got a 503, though no task by that name is served;
 * now the 404 (model_not_found) at once, never on the draining worker. A live task a worker is still catching up on
 * (a load, or a replace of an older adapter under the name) keeps the wait, and a task re-created under the name while
 * the old adapter drains never reaches the old adapter.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { parseSchedulingConfig, type GatewayConfig } from '@inlaid/config';
import { testDatabase } from '@inlaid/db/testing';
import { toOpenAIError } from '../common/http-mapping';
import type { InlaidError } from '../common/inlaid-error';
import { GenerationService } from '../generation/generation.service';
import type { Generation, GenerationInput } from '../generation/generation.types';
import type { RecordsService } from '../records/records.service';
import { SchedulingService } from '../scheduling/scheduling.service';
import type { FakeWorker } from '../testing/adapter-fake-worker';
import { CatchUpHarness } from '../testing/catch-up-harness';
import { eventually, sleep } from '../testing/eventually';
import type { AdapterCatchUp } from './adapter-catch-up.service';
import type { OnboardQueues } from './onboard-queues.service';
import type { TaskStore } from './task-store.service';
import { TasksService } from './tasks.service';

const D1 = '1'.repeat(64);
const D2 = '2'.repeat(64);
const disk = new Map<string, string>();
const db = testDatabase('inlaid_deleted_404');
/** pick's wait for a catch-up here (30 s in production): a request that waits for the drain fails in 5 s, with a 503. */
const WAIT_MS = 5000;

const input = (model: string): GenerationInput => ({
  model, prompt: 'hi', messages: [], sampling: { maxTokens: 2, stop: [], stopTokenIds: [], ignoreEos: false }, api: 'completions',
});

/** What OpenAI's clients get for a model that does not exist (toOpenAIError of the gateway's error). */
const NOT_FOUND_BODY = {
  httpStatus: 404,
  body: { error: { message: 'The model `t` does not exist.', type: 'invalid_request_error', param: 'model', code: 'model_not_found' } },
};

jest.setTimeout(30_000);

describe('a request for a task deleted while a worker drains its adapter', () => {
  const h = new CatchUpHarness(disk, db);
  const { addr, conn, holdLocks } = h;
  let a: FakeWorker;
  let b: FakeWorker;
  let store: TaskStore;
  let catchUp: AdapterCatchUp;
  let tasks: TasksService;
  let gen: GenerationService;
  let root: string;
  /** t's first adapter (digest D1) and a second one (D2). */
  let p1: string;
  let p2: string;

  beforeEach(async () => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'inlaid-deleted-404-')));
    [p1, p2] = [join(root, 't1'), join(root, 't2')];
    mkdirSync(p1);
    mkdirSync(p2);
    disk.clear();
    disk.set(p1, D1);
    disk.set(p2, D2);
    await h.setup();
    ({ a, b, store, catchUp } = h);
    h.workers.catchUpWaitMs = WAIT_MS;
    tasks = new TasksService({ tasks: { dataDir: root, adapterRoots: [root] } } as unknown as GatewayConfig, store, h.admin, h.workers, {} as OnboardQueues, catchUp);
    const config = { scheduling: parseSchedulingConfig({}), workerAddrs: [addr(a), addr(b)] } as unknown as GatewayConfig;
    const scheduling = new SchedulingService(config, h.workers, db());
    await Promise.all(h.workers.acceptingConnections().map((c) => c.refreshInfo())); // its dispatcher learns of A and B
    gen = new GenerationService(h.workers, { add: () => undefined } as unknown as RecordsService, scheduling);
  });

  afterEach(async () => {
    h.teardown(a, b);
    await store.locked('t', async (tx) => {
      const latest = await tx.latest('t');
      if (latest !== null && latest.status !== 'deleted') await tx.transition(latest.id, 'deleted', 'spec cleanup');
    });
    rmSync(root, { recursive: true, force: true });
  });

  /** start(), its error (null when it started) and how long it took. */
  async function attempt(model: string): Promise<{ err: InlaidError | null; ms: number }> {
    const t0 = Date.now();
    const err = await gen.start(input(model)).then((g) => (g.abort('spec'), null), (e: unknown) => e as InlaidError);
    return { err, ms: Date.now() - t0 };
  }

  /** start() left running: `settled()` says whether it ended (either way) yet; `result` its Generation (it throws its error). */
  function waiting(model: string): { settled: () => boolean; result: Promise<Generation> } {
    let done = false;
    const result = gen.start(input(model)).finally(() => (done = true));
    result.catch(() => undefined); // read by the case
    return { settled: () => done, result };
  }

  /** Waits until `w` got `n` Admits on its Session (they reach it after start() resolved). */
  const admitted = (w: FakeWorker, n: number): Promise<void> => eventually(() => w.admits.length >= n, `${n} Admits on worker ${w.port}`, 3000);

  /** Ends `w`'s server (its link goes down: a partition, or a crash); it keeps what it holds. */
  async function down(w: FakeWorker): Promise<void> {
    w.server.forceShutdown();
    await eventually(() => conn(w) === undefined, `worker ${w.port} down`, 5000);
  }

  it('gets the 404 (model_not_found) at once, from a worker not holding it, never the draining worker', async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: p1 });
    b.busy.add('t'); // requests in flight for t on B
    expect((await tasks.delete('t')).status).toBe('deleted');
    await eventually(() => conn(b)?.pendingFor('t') === true && b.refusedUnloads.length > 0, 't held on B, its unload refused in use', 5000);

    const { err, ms } = await attempt('t');
    expect(err === null ? null : toOpenAIError(err)).toEqual(NOT_FOUND_BODY); // before: a 503 after the whole wait
    expect(ms).toBeLessThan(2000);
    expect([a.prepares, b.prepares, b.admits]).toEqual([['t 404'], [], []]); // A's Prepare answered; B was never asked
    expect((await attempt('m')).err).toBeNull(); // the base model is served as ever

    b.busy.clear(); // they finish: B unloads t, its hold ends
    await eventually(() => !b.adapters.has('t') && !catchUp.pending(addr(b)), 'B unloaded t', 5000);
    expect(toOpenAIError((await attempt('t')).err as InlaidError)).toEqual(NOT_FOUND_BODY);
  });

  it('held on every worker (each drains it): the gateway answers the 404 itself, at once', async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: p1 });
    a.busy.add('t');
    b.busy.add('t');
    expect((await tasks.delete('t')).status).toBe('deleted');
    await eventually(() => conn(a)?.pendingFor('t') === true && conn(b)?.pendingFor('t') === true, 't held on A and B', 5000);

    const { err, ms } = await attempt('t');
    expect(err === null ? null : toOpenAIError(err)).toEqual(NOT_FOUND_BODY);
    expect(ms).toBeLessThan(2000);
    expect([a.prepares, b.prepares]).toEqual([[], []]); // neither old adapter was reached
    expect(err?.status).toBe(status.NOT_FOUND);
  });

  it("a live task a restarted worker is still loading keeps today's wait: served there once loaded, no 404", async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: p1 });
    catchUp.lockBusyMs = 50;
    await down(a);
    await down(b);
    const release = await holdLocks(['t']); // B's catch-up cannot load t yet
    let req: ReturnType<typeof waiting>;
    try {
      b = await h.start(b.port); // back without t (a published checkpoint holds no adapter)
      await eventually(() => conn(b)?.adapterHold !== 'all' && conn(b)?.pendingFor('t') === true, 't held on B', 5000);
      req = waiting('t');
      await sleep(500);
      expect(req.settled()).toBe(false); // it waits for B's catch-up (a task the fleet serves: no 404)
      expect(b.prepares).toEqual([]);
    } finally {
      await release();
    }
    (await req.result).abort('spec');
    await admitted(b, 1);
    expect([b.loads, b.prepares, b.admits]).toEqual([[`t ${p1}`], [`t ${p1}`], [`t ${p1}`]]);
  });

  it('a live task whose older adapter a worker drains (its replace refused in use) keeps the wait, and never meets the old adapter', async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: p1 });
    await down(b); // B's link goes down; it keeps t from p1
    await tasks.delete('t'); // unloaded from A only
    await tasks.loadLora({ lora_name: 't', lora_path: p2 }); // a new t, served on A
    b = await h.start(b.port, { t: { path: p1, digest: D1 } }, { busy: ['t'] }); // back, the old t with requests in flight
    await eventually(() => conn(b)?.pendingFor('t') === true && b.refusedUnloads.length > 0, "B's replace of t refused in use", 5000);

    expect((await attempt('t')).err).toBeNull();
    await admitted(a, 1);
    expect([a.prepares, a.admits, b.prepares, b.admits]).toEqual([[`t ${p2}`], [`t ${p2}`], [], []]); // A, the new t

    await down(a); // only B is left, still draining the old t: the request waits for its replace (no 404)
    const req = waiting('t');
    await sleep(500);
    expect(req.settled()).toBe(false);
    b.busy.clear();
    (await req.result).abort('spec');
    await admitted(b, 1);
    expect([b.unloads, b.loads, b.prepares, b.admits]).toEqual([['t'], [`t ${p2}`], [`t ${p2}`], [`t ${p2}`]]); // the new t only
  });

  it('a task load_lora_adapter has just loaded is served at once, while the catch-up that drains a deleted one is due', async () => {
    // (review, session 22: a round's read outside the lock, racing the load's transaction, called the new name
    // "only to unload" and 404'd it right after the load's 200 on a one-worker fleet)
    await down(a);
    await tasks.loadLora({ lora_name: 't', lora_path: p1 });
    b.busy.add('t');
    await tasks.delete('t');
    await eventually(() => conn(b)?.pendingFor('t') === true && b.refusedUnloads.length > 0, 't held on B', 5000);
    for (const name of ['n0', 'n1', 'n2', 'n3']) {
      await tasks.loadLora({ lora_name: name, lora_path: p2 });
      expect((await h.workers.pick(name)).addr).toBe(addr(b)); // before the mend: NOT_FOUND in 0-1 ms
    }
    expect(conn(b)?.unloadingFor('t')).toBe(true); // the deleted one is still answered 404 at once
    for (const name of ['n0', 'n1', 'n2', 'n3']) await tasks.delete(name);
  });

  it('re-created under the name (an onboarding) while the old adapter drains: the 404 until it is loaded, then its new adapter; never the old one', async () => {
    await tasks.loadLora({ lora_name: 't', lora_path: p1 });
    b.busy.add('t');
    await tasks.delete('t');
    await eventually(() => conn(b)?.pendingFor('t') === true, 't held on B', 5000);
    await down(b); // a partition while B still runs them: POST /v1/tasks finds no ready worker listing t
    const id = randomUUID();
    await store.create({ id, task: 't', kind: 'onboard', status: 'queued', adapterPath: p2, calibrationPath: null, slo: null, waitForQuantization: false, message: 'accepted' });
    b = await h.start(b.port, { t: { path: p1, digest: D1 } }, { busy: ['t'] }); // back, the old t still in use
    await eventually(() => conn(b)?.adapterHold !== 'all' && conn(b)?.pendingFor('t') === true && b.refusedUnloads.length > 0, 't held on B', 5000);

    // not loaded anywhere yet (queued): the 404, at once, as for any onboarding not loaded yet
    const { err, ms } = await attempt('t');
    expect(err === null ? null : toOpenAIError(err)).toEqual(NOT_FOUND_BODY); // before: a 503 after the whole wait
    expect(ms).toBeLessThan(2000);

    // its load step's first try: A loads the new t, B refuses to replace the old one (ABORTED, retried)
    await expect(h.admin.loadEverywhere('t', p2, { validated: D2 })).rejects.toMatchObject({ status: status.ABORTED });
    catchUp.recheck(addr(b));
    expect((await attempt('t')).err).toBeNull();
    await admitted(a, 1);
    expect([a.prepares, a.admits]).toEqual([['t 404', `t ${p2}`], [`t ${p2}`]]);
    expect([b.prepares, b.admits]).toEqual([[], []]); // never the old t on B
    expect((await store.get(id))?.status).toBe('queued');
  });
});
