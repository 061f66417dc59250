/**
 * A worker that was down while a task was deleted and its adapter files rewritten in place (same path, new bytes), and
 * that comes back while the task's NEW onboarding job is not loaded yet (queued, validating, quantizing), against real
 * Postgres, the real onboarding steps (validate, load: OnboardSteps), AdapterCatchUp and real grpc-js fake workers
 * (testing/adapter-fake-worker.ts). Before: the job had no digest until its load step, so the catch-up compared paths
 * only ('none': the worker kept the old adapter, unheld), and the load step took the worker's ALREADY_EXISTS as done,
 * recording the fresh loads' digest (another worker's) or, the worker alone, its OLD digest: it served the old weights
 * (for good when alone). Now the validate step records the digest of the files it validated (ValidateAdapter's card)
 * and unloads such an adapter; the catch-up unloads it while the job is live but not loaded (its digest is not the
 * job's); and the load step reloads a worker that answers ALREADY_EXISTS with another digest than the reference. An old
 * adapter with requests in flight (the worker refuses its unload) is held on that worker by its catch-up, rechecked by
 * the step, until they drain, and the load step is ABORTED (retried) meanwhile; before, FAILED_PRECONDITION failed the
 * onboarding for good, and a failed onboarding's unload stopped at that worker.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import type { GatewayConfig } from '@inlaid/config';
import { testDatabase } from '@inlaid/db/testing';
import type { FakeWorker, HeldAdapter } from '../testing/adapter-fake-worker';
import { CatchUpHarness } from '../testing/catch-up-harness';
import { eventually } from '../testing/eventually';
import type { WorkersService } from '../workers/workers.service';
import type { AdapterCatchUp } from './adapter-catch-up.service';
import type { OnboardQueues } from './onboard-queues.service';
import { OnboardSteps } from './onboard-steps';
import type { TaskStore } from './task-store.service';
import { TasksService } from './tasks.service';
import { UnloadFailed, type WorkerAdminService } from './worker-admin.service';

/** path -> the digest of the adapter files there now (what ValidateAdapter and LoadAdapter of that path read). */
const disk = new Map<string, string>();
const D1 = '1'.repeat(64);
const D2 = '2'.repeat(64);
const OLD: HeldAdapter = { path: '/adapters/t', digest: D1 };

const db = testDatabase('inlaid_rewrite_onboard');

describe('a worker back, with the old bytes of a task rewritten in place, before the new job is loaded', () => {
  const h = new CatchUpHarness(disk, db);
  const { start, addr, conn, caughtUp, listed, deleteTask, holdLocks } = h;
  let a: FakeWorker;
  let b: FakeWorker;
  let workers: WorkersService;
  let admin: WorkerAdminService;
  let store: TaskStore;
  let catchUp: AdapterCatchUp;
  let steps: OnboardSteps;
  const ctx = { report: async () => undefined };

  /** POST /v1/load_lora_adapter's job and load (its validation's digest as the reference, as tasks.service does). */
  const loadTask = (task: string, path: string): Promise<string> => h.loadTask(task, path, disk.get(path) ?? null);

  /** POST /v1/tasks' row: a queued onboarding (no digest yet). */
  async function onboard(task: string, path: string): Promise<string> {
    const id = randomUUID();
    await store.create({ id, task, kind: 'onboard', status: 'queued', adapterPath: path, calibrationPath: null, slo: null, waitForQuantization: false, message: 'accepted' });
    return id;
  }

  /** Ends `w`'s server (its link goes down): it keeps what it holds. */
  async function down(w: FakeWorker): Promise<void> {
    w.server.forceShutdown();
    await eventually(() => conn(w) === undefined, `worker ${w.port} down`, 5000);
  }

  /**
   * t served from /adapters/t (D1) on the workers up; `w` goes down; t deleted (unloaded from the others) and its
   * files rewritten in place (D2): `w` still holds the old bytes from the same path.
   */
  async function rewrittenWhileDown(w: FakeWorker): Promise<void> {
    disk.set('/adapters/t', D1);
    await loadTask('t', '/adapters/t');
    await down(w);
    await deleteTask('t');
    disk.set('/adapters/t', D2);
  }

  beforeAll(async () => {
    await h.setup();
    ({ a, b, workers, admin, store, catchUp } = h);
    steps = new OnboardSteps({ tasks: { dataDir: '/nonexistent' } } as unknown as GatewayConfig, store, admin, catchUp);
  });

  afterEach(async () => {
    // both workers up, t ended everywhere: the next case starts from a fleet without it
    if (conn(a) === undefined) a = await start(a.port);
    if (conn(b) === undefined) b = await start(b.port);
    await caughtUp(a, 'A up');
    await caughtUp(b, 'B up');
    const latest = await store.latest('t');
    if (latest !== null && latest.status !== 'deleted') await deleteTask('t');
    expect([a.adapters.has('t'), b.adapters.has('t')]).toEqual([false, false]);
  });

  afterAll(() => h.teardown(a, b));

  it('back while the job is queued: the validate step records the digest and unloads the old bytes; the load step loads the new ones', async () => {
    await rewrittenWhileDown(b);
    const id = await onboard('t', '/adapters/t');
    b = await start(b.port, { t: OLD });
    await caughtUp(b, 'B back');
    expect(b.unloads).toEqual([]); // the job has no digest yet: the paths are equal, B keeps it (a live job's path)

    expect(await steps.run('validate', id, ctx)).toBe('valid');
    expect((await store.get(id))?.adapterDigest).toBe(D2); // the validated files' digest: the job's reference
    expect(b.unloads).toEqual(['t']); // before: B kept serving the old bytes under t until the load step, and after
    expect(conn(b)?.serves('t')).toBe(false);

    expect(await steps.run('load', id, ctx)).toBe('loaded');
    expect((await store.get(id))?.adapterDigest).toBe(D2);
    expect([a.adapters.get('t'), b.adapters.get('t')]).toEqual([{ path: '/adapters/t', digest: D2 }, { path: '/adapters/t', digest: D2 }]);
    expect(b.loads).toEqual(['t /adapters/t']);
  });

  it("alone, with requests in flight on the old bytes at validation: the load step replaces them and records the job's digest, not the old one", async () => {
    await rewrittenWhileDown(b);
    await down(a); // B alone
    const id = await onboard('t', '/adapters/t');
    b = await start(b.port, { t: OLD }, { busy: ['t'] }); // its unload refused (requests in flight) for now
    await caughtUp(b, 'B back');

    // B's catch-up (rechecked by the validate step) must not replace the old bytes first: its retries wait a minute
    // here, so the unload below can only be the load step's (else a broken replace would pass, the catch-up doing it)
    const { retry, inUseRetryMs } = catchUp;
    try {
      catchUp.retry = { baseMs: 60_000, maxMs: 60_000 };
      catchUp.inUseRetryMs = 60_000;
      expect(await steps.run('validate', id, ctx)).toBe('valid'); // validated on B: the files there now
      expect(b.validations).toEqual(['t /adapters/t']);
      expect((await store.get(id))?.adapterDigest).toBe(D2);
      expect(b.adapters.get('t')).toEqual(OLD); // the unload refused: logged, left to the load step (and B's catch-up)
      await eventually(() => b.refusedUnloads.length >= 2, "B's catch-up refused in use once", 5000); // the step's, then the catch-up's
      b.busy.clear();
      expect(b.unloads).toEqual([]);
      expect(await steps.run('load', id, ctx)).toBe('loaded');
      // before: ALREADY_EXISTS counted as loaded and B's OLD digest was recorded: B served the old weights for good
      expect((await store.get(id))?.adapterDigest).toBe(D2);
      expect(b.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D2 });
      expect({ unloads: b.unloads, loads: b.loads }).toEqual({ unloads: ['t'], loads: ['t /adapters/t'] });
    } finally {
      catchUp.retry = retry;
      catchUp.inUseRetryMs = inUseRetryMs;
    }
    catchUp.recheck(addr(b)); // its pending retry, now
    await caughtUp(b, 'B caught up');
    expect(b.loads).toEqual(['t /adapters/t']); // the catch-up finds nothing to do
  });

  it('alone, with requests in flight on the old bytes through the load step: held there, the step ABORTED (retried), then loaded once they drain', async () => {
    await rewrittenWhileDown(b);
    await down(a); // B alone
    const id = await onboard('t', '/adapters/t');
    b = await start(b.port, { t: OLD }, { busy: ['t'] }); // its unload refused (requests in flight) until they finish
    await caughtUp(b, 'B back');
    expect(conn(b)?.pendingFor('t')).toBe(false); // the job has no digest yet: the old bytes are not told apart

    expect(await steps.run('validate', id, ctx)).toBe('valid');
    // the step's unload refused: B's catch-up, rechecked once the digest is committed, holds t there (no new request
    // goes to the old bytes, so those in flight drain) and retries its unload; before, B served the old bytes meanwhile
    await eventually(() => conn(b)?.pendingFor('t') === true, 't held on B', 5000);
    expect(listed()).not.toContain('t');

    const err = await steps.run('load', id, ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnloadFailed);
    // ABORTED: the onboarding queue retries the step (RETRYABLE); before, FAILED_PRECONDITION failed the job for good
    expect([(err as UnloadFailed).status, (err as UnloadFailed).inUse]).toEqual([status.ABORTED, [addr(b)]]);
    expect((await store.get(id))?.status).toBe('loading');
    expect(b.adapters.get('t')).toEqual(OLD);

    // a refusal in use is no failure of the worker's: the hold outlasts HOLD_FAILURES (2) refusals in a row
    const refused = b.refusedUnloads.length;
    await eventually(() => b.refusedUnloads.length >= refused + 3, "three more of the catch-up's unloads refused", 5000);
    expect(conn(b)?.pendingFor('t')).toBe(true);
    expect(catchUp.pending(addr(b))).toBe(true);

    b.busy.clear(); // the requests in flight finished
    await eventually(() => !b.adapters.has('t'), "B's catch-up unloads the old bytes", 5000);
    await caughtUp(b, 'B caught up');
    expect(conn(b)?.pendingFor('t')).toBe(false); // not served anywhere yet: not held (a 404 until the load)
    expect(await steps.run('load', id, ctx)).toBe('loaded'); // the step's retry
    expect((await store.get(id))?.adapterDigest).toBe(D2);
    expect(b.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D2 });
    expect({ unloads: b.unloads, loads: b.loads }).toEqual({ unloads: ['t'], loads: ['t /adapters/t'] });
  });

  it("a failed onboarding's unload goes on past a worker whose adapter has requests in flight, whose catch-up unloads it once they drain", async () => {
    disk.set('/adapters/t', D2);
    const id = await onboard('t', '/adapters/t');
    expect(await steps.run('validate', id, ctx)).toBe('valid');
    expect(await steps.run('load', id, ctx)).toBe('loaded');
    a.busy.add('t'); // A, first in WORKER_ADDRS order, has requests in flight on it
    await steps.failAndUnload((await store.get(id)) as NonNullable<Awaited<ReturnType<TaskStore['get']>>>, 'requantize', 'failed for the test');
    expect((await store.get(id))?.status).toBe('failed');
    expect(b.adapters.has('t')).toBe(false); // before: the unload stopped at A, and B kept serving the failed job's adapter
    expect(a.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D2 });
    // A's catch-up, rechecked: the failed job's adapter is held there (its requests drain) and unloaded once they have
    await eventually(() => conn(a)?.pendingFor('t') === true, 't held on A', 5000);
    expect(listed()).not.toContain('t');
    a.busy.clear();
    await eventually(() => !a.adapters.has('t'), "A's catch-up unloads it", 5000);
    await caughtUp(a, 'A caught up');
    expect(conn(a)?.pendingFor('t')).toBe(false);
  });

  it('back after the validation: its catch-up unloads the old bytes (held meanwhile), and the load step loads the new ones', async () => {
    await rewrittenWhileDown(b);
    const id = await onboard('t', '/adapters/t');
    expect(await steps.run('validate', id, ctx)).toBe('valid');
    expect((await store.get(id))?.status).toBe('loading'); // live, not loaded anywhere

    catchUp.lockBusyMs = 50;
    const release = await holdLocks(['t']); // keeps B's catch-up from deciding t, so its hold can be seen
    try {
      b = await start(b.port, { t: OLD });
      await eventually(() => conn(b)?.adapterHold !== 'all' && conn(b)?.pendingFor('t') === true, 't held on B', 5000);
      expect(conn(b)?.serves('t')).toBe(true); // B lists it...
      expect(listed()).not.toContain('t'); // ...but /v1/models does not, and no request goes there
      await expect(workers.pick('t', new Set(), AbortSignal.timeout(200))).rejects.toThrow();
    } finally {
      await release();
      catchUp.lockBusyMs = 1000;
    }
    await caughtUp(b, 'B caught up');
    expect(b.unloads).toEqual(['t']); // before: 'none' (same path, the job had no digest): B served the old bytes
    expect(b.adapters.has('t')).toBe(false);

    expect(await steps.run('load', id, ctx)).toBe('loaded');
    expect(b.adapters.get('t')).toEqual({ path: '/adapters/t', digest: D2 });
    expect((await store.get(id))?.adapterDigest).toBe(D2);
  });

  it('a job with no validated digest (validated before digests): the load step still replaces a worker holding other bytes than the fresh loads', async () => {
    await rewrittenWhileDown(b);
    const id = await onboard('t', '/adapters/t');
    b = await start(b.port, { t: OLD });
    await caughtUp(b, 'B back');
    // as a validate step of a gateway before digests left it: validated, no digest
    await store.stageFinished(id, 'validate', 'done');
    await store.transition(id, 'loading', 'validated (rank 4)');
    expect((await store.get(id))?.adapterDigest).toBeNull();

    expect(await steps.run('load', id, ctx)).toBe('loaded');
    // before: the fresh load's D2 recorded, B ignored, and not due for a catch-up: it served the old bytes until its
    // next Session
    expect((await store.get(id))?.adapterDigest).toBe(D2);
    expect([a.adapters.get('t')?.digest, b.adapters.get('t')?.digest]).toEqual([D2, D2]);
    expect(b.unloads).toEqual(['t']);
  });

  it("POST /v1/load_lora_adapter: its validation's digest is the job's reference, and the card it answers carries none", async () => {
    const root = realpathSync(mkdtempSync(join(tmpdir(), 'inlaid-rewrite-')));
    try {
      const path = join(root, 'v');
      mkdirSync(path);
      disk.set(path, D2);
      const config = { tasks: { dataDir: root, adapterRoots: [root] } } as unknown as GatewayConfig;
      const tasks = new TasksService(config, store, admin, workers, {} as OnboardQueues, catchUp);
      const { card } = await tasks.loadLora({ lora_name: 'v', lora_path: path });
      expect([card.id, card.rank, card.digest]).toEqual(['v', 4, '']); // the gRPC LoadLoraAdapter answer: no digest
      expect((await store.latest('v'))?.adapterDigest).toBe(D2);
      expect([a.adapters.get('v'), b.adapters.get('v')]).toEqual([{ path, digest: D2 }, { path, digest: D2 }]);
      await tasks.unloadLora({ lora_name: 'v' });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
