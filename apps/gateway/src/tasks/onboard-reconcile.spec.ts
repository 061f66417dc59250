/**
 * The onboarding reconciliation of live gateways (onboard-queues.service.ts) and the removal of a failed
 * task's upload directory (onboard-steps.ts, task-files.ts), against real Postgres and Redis. Two
 * OnboardQueues instances play two gateways sharing one database and one BullMQ prefix; their step
 * processor is a stub that records which step of which task ran (the workers are not part of this).
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { parseTasksConfig, type GatewayConfig, type TasksConfig } from '@inlaid/config';
import { dropDatabase, openDatabase } from '@inlaid/db';
import { ONBOARD_QUEUE, OnboardStep, REQUANTIZE_QUEUE, stepJobId } from '@inlaid/jobs';
import { Job, Queue } from 'bullmq';
import IORedis from 'ioredis';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataSource } from 'typeorm';
import { InlaidError } from '../common/inlaid-error';
import { catchUpStub } from '../testing/catch-up-stub';
import type { WorkersService } from '../workers/workers.service';
import { OnboardQueues, reconcileDelay } from './onboard-queues.service';
import { OnboardSteps, StepFailed } from './onboard-steps';
import { taskUploadDir } from './task-files';
import { FILES_REMOVE_TRIES, TaskStore } from './task-store.service';
import { TasksService } from './tasks.service';
import type { WorkerAdminService } from './worker-admin.service';

jest.setTimeout(30_000);

const REDIS_URL = 'redis://127.0.0.1:6379';
const url = `postgres://postgres@127.0.0.1:5432/inlaid_reconcile_${randomBytes(4).toString('hex')}`;
const PREFIX = `rc${randomBytes(4).toString('hex')}`;
let db: DataSource;
let store: TaskStore;
let root: string;
let dataDir: string;
const gateways: OnboardQueues[] = [];

/** The steps that ran, as `<task job id>.<step>`, in order. */
const ran: string[] = [];
/** Steps that wait for this promise before they finish (to hold a re-quantization step active). */
let holdRequantize: Promise<void> = Promise.resolve();

beforeAll(async () => {
  db = await openDatabase(url, 6);
  store = new TaskStore(db);
  root = mkdtempSync(join(tmpdir(), 'inlaid-reconcile-'));
  dataDir = join(root, 'data');
});

afterAll(async () => {
  for (const g of gateways) await g.onModuleDestroy();
  const redis = new IORedis(REDIS_URL);
  const keys = await redis.keys(`${PREFIX}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  await db?.destroy();
  await dropDatabase(url);
  rmSync(root, { recursive: true, force: true });
});

/** A started gateway's onboarding side: its queue workers run the stub steps, its reconciliation runs as configured. */
function gateway(env: Record<string, string>, override: Partial<TasksConfig> = {}): { queues: OnboardQueues; steps: OnboardSteps; config: GatewayConfig } {
  // override: settings below what the parser accepts (a TTL of seconds), to keep the tests short
  const tasks = { ...parseTasksConfig({ INLAID_DATA_DIR: dataDir, INLAID_QUEUE_PREFIX: PREFIX, ...env }), ...override };
  const config = { redisUrl: REDIS_URL, tasks } as unknown as GatewayConfig;
  const admin = { unloadEverywhere: async () => undefined } as unknown as WorkerAdminService;
  const steps = new OnboardSteps(config, store, admin, catchUpStub());
  jest.spyOn(steps, 'run').mockImplementation(async (step: OnboardStep, taskJobId: string) => {
    if (step === 'requantize') await holdRequantize;
    ran.push(`${taskJobId}.${step}`);
    return 'ok';
  });
  const queues = new OnboardQueues(config, steps, store);
  queues.onApplicationBootstrap();
  gateways.push(queues);
  return { queues, steps, config };
}

/** A task_jobs row as tasks.service.ts create() writes it, with its upload directory; its flow is not enqueued. */
async function accepted(task: string, status: 'queued' | 'validating' | 'quantizing' = 'queued'): Promise<{ id: string; dir: string }> {
  const id = randomUUID();
  const dir = taskUploadDir(dataDir, task, id);
  mkdirSync(join(dir, 'adapter'), { recursive: true });
  writeFileSync(join(dir, 'adapter', 'adapter_model.safetensors'), 'weights');
  writeFileSync(join(dir, 'calibration.jsonl'), '{"text":"x"}\n');
  await store.create({ id, task, kind: 'onboard', status, adapterPath: join(dir, 'adapter'), calibrationPath: join(dir, 'calibration.jsonl'), slo: null, waitForQuantization: false, message: 'accepted' });
  return { id, dir };
}

const stepsRun = (id: string) => ran.filter((r) => r.startsWith(`${id}.`)).sort();
const ALL_STEPS = (id: string) => ['activate', 'load', 'requantize', 'validate'].map((s) => `${id}.${s}`);

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('periodic reconciliation by live gateways', () => {
  const GRACE = 1500;
  let a: OnboardQueues;
  let b: OnboardQueues;
  let enqueues: jest.SpyInstance[];
  /** When each enqueue was called (task job id, Date.now()). */
  const enqueuedAt: Array<[string, number]> = [];

  beforeAll(async () => {
    const env = { INLAID_ONBOARD_RECONCILE_MS: '200', INLAID_ONBOARD_RECONCILE_GRACE_MS: String(GRACE) };
    a = gateway(env).queues;
    b = gateway(env).queues;
    enqueues = [a, b].map((g) =>
      jest.spyOn(g, 'enqueue').mockImplementation(async (...args: [string, string, boolean]) => {
        enqueuedAt.push([args[0], Date.now()]);
        return OnboardQueues.prototype.enqueue.apply(g, args);
      }),
    );
    await Promise.all([a.settled(), b.settled()]); // the start-up passes (no grace) are over
  });
  afterAll(async () => {
    // stopped, so that their passes do not hold the lock while the tests below run passes of their own
    for (const g of [a, b]) {
      gateways.splice(gateways.indexOf(g), 1);
      await g.onModuleDestroy();
    }
  });
  const enqueued = (id: string) => enqueues.flatMap((s) => s.mock.calls).filter((c) => c[0] === id).length;

  it('enqueues a row no gateway enqueued once it is older than the grace, exactly once with two gateways reconciling', async () => {
    const started = Date.now(); // before the row's created_at (Postgres runs on this machine's clock)
    const { id } = await accepted('orphan');
    await until('the orphan flow to run', () => stepsRun(id).length === 4);
    // passes every ~200 ms of both gateways ran while the row was younger than the grace (its own gateway may
    // still enqueue it then) and left it alone: the one enqueue came after the row's age passed the grace
    const at = enqueuedAt.filter(([j]) => j === id).map(([, t]) => t);
    expect(at).toHaveLength(1);
    expect((at[0] as number) - started).toBeGreaterThanOrEqual(GRACE);
    await sleep(500); // more passes of both: the flow is live (its root completed), nothing is enqueued again
    expect(enqueued(id)).toBe(1);
    expect(stepsRun(id)).toEqual(ALL_STEPS(id));
  });

  it('adds a flow once however often it is enqueued (job ids derive from the row id)', async () => {
    const { id } = await accepted('twice');
    await Promise.all([a.enqueue(id, 'twice', false), b.enqueue(id, 'twice', false), a.enqueue(id, 'twice', false)]);
    await until('the flow to run', () => stepsRun(id).length === 4);
    await sleep(200);
    expect(stepsRun(id)).toEqual(ALL_STEPS(id));
    const q = new Queue(ONBOARD_QUEUE, { connection: { url: REDIS_URL }, prefix: PREFIX });
    try {
      expect((await Job.fromId(q, stepJobId(id, 'validate')))?.attemptsMade).toBe(1);
    } finally {
      await q.close();
    }
  });
});

describe('two gateways\' passes at once', () => {
  it('lets one pass run at a time: the other gateway\'s gets no lock and enqueues nothing', async () => {
    const env = { INLAID_ONBOARD_RECONCILE_MS: '0' }; // passes run by the test
    const a = gateway(env).queues;
    const b = gateway(env).queues;
    await Promise.all([a.settled(), b.settled()]);
    const spies = [jest.spyOn(a, 'enqueue'), jest.spyOn(b, 'enqueue')];
    const { id } = await accepted('race');
    let inside!: () => void;
    const entered = new Promise<void>((r) => (inside = r));
    // a's enqueue is slow, so a holds its pass while b's runs; without the lock b would see the flow missing too
    spies[0]?.mockImplementationOnce(async (...args: unknown[]) => {
      inside();
      await sleep(400);
      return OnboardQueues.prototype.enqueue.apply(a, args as [string, string, boolean]);
    });
    const first = a.reconcile(0);
    await entered;
    expect(await b.reconcile(0)).toBeNull();
    expect((await first)?.enqueued).toEqual([id]);
    await until('the raced flow to run', () => stepsRun(id).length === 4);
    expect(await b.reconcile(0)).toEqual({ enqueued: [], failed: [], filesRemoved: [] }); // live now
    expect(spies.flatMap((s) => s.mock.calls).length).toBe(1);
  });
});

describe('a failed task\'s upload directory', () => {
  const TTL = 1500;
  let queues: OnboardQueues;
  let steps: OnboardSteps;
  let config: GatewayConfig;

  beforeAll(async () => {
    ({ queues, steps, config } = gateway({ INLAID_ONBOARD_RECONCILE_MS: '0' }, { failedFilesTtlMs: TTL })); // passes run by the test
    await queues.settled(); // its start-up pass is over: the passes below are the test's
  });

  /** A task that failed while quantizing (its files pending), last written longer ago than the TTL. */
  async function failedLate(task: string): Promise<{ id: string; dir: string }> {
    const t = await accepted(task, 'quantizing');
    await steps.failAndUnload((await store.get(t.id))!, 'requantize', 'quantizer died');
    return t;
  }
  const pastTtl = (id: string) => until(`${id} past the TTL`, async () => (await store.failedWithFiles(TTL)).some((r) => r.id === id));

  it('goes at once when the task failed before any re-quantization; the row keeps the reason and a client-named file stays', async () => {
    const { id, dir } = await accepted('early', 'validating');
    const named = join(dataDir, 'files', 'file-abc.jsonl'); // a calibration file_id the client named
    mkdirSync(join(dataDir, 'files'), { recursive: true });
    writeFileSync(named, '{"text":"y"}\n');
    const job = await store.update(id, (j) => (j.calibrationPath = named));
    await steps.failAndUnload(job, 'validate', 'lora_A has NaN');
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(named)).toBe(true);
    const row = await store.get(id);
    expect({ status: row?.status, error: row?.error, removed: typeof row?.progress.filesRemovedAt, pending: row?.progress.filesPending }).toEqual({ status: 'failed', error: 'validate: lora_A has NaN', removed: 'string', pending: undefined });
    await steps.failAndUnload(job, 'validate', 'again'); // ended already: nothing changes, nothing throws
    expect(await steps.freeFailedFiles(job)).toBe(true); // idempotent
    expect((await store.get(id))?.error).toBe('validate: lora_A has NaN');
  });

  it('stays for the TTL and while a run holds the task in its batch; a re-quantization step of other tasks does not keep it', async () => {
    const { id, dir } = await failedLate('late');
    expect((await store.get(id))?.progress.filesPending).toBe(true);
    expect(existsSync(join(dir, 'calibration.jsonl'))).toBe(true);
    expect((await queues.reconcile())?.filesRemoved).toEqual([]); // failed just now (within the TTL)
    expect(existsSync(dir)).toBe(true);
    let release!: () => void;
    holdRequantize = new Promise<void>((r) => (release = r));
    const requantize = new Queue(REQUANTIZE_QUEUE, { connection: { url: REDIS_URL }, prefix: PREFIX });
    try {
      const other = await accepted('busy');
      await queues.enqueue(other.id, 'busy', false);
      await until('a re-quantization step to be active', async () => (await requantize.getJobCounts('active')).active > 0);
      await pastTtl(id);
      // a run under way whose batch holds the task (a quantizing row's progress.batch, without a checkpoint)
      const runner = randomUUID();
      await store.create({ id: runner, task: 'runner', kind: 'onboard', status: 'quantizing', adapterPath: null, calibrationPath: null, slo: null, waitForQuantization: false, message: 'in a run' });
      await store.update(runner, (j) => (j.progress = { ...j.progress, batch: ['late', 'runner'] }));
      expect((await queues.reconcile())?.filesRemoved).toEqual([]);
      expect(existsSync(dir)).toBe(true);
      await store.remove(runner);
      // the held step is still active: a run it starts reads only tasks still quantizing, never a failed one
      expect((await requantize.getJobCounts('active')).active).toBeGreaterThan(0);
      expect((await queues.reconcile())?.filesRemoved).toEqual([id]);
      expect(existsSync(dir)).toBe(false);
      release();
      await until('the re-quantization step to finish', () => stepsRun(other.id).length === 4);
    } finally {
      release();
      holdRequantize = Promise.resolve();
      await requantize.close();
    }
    expect((await queues.reconcile())?.filesRemoved).toEqual([]); // recorded: not looked at again
  });

  it('stays while the run that read the task in its batch goes on, also when the task fails meanwhile: a run writes its batch on its rows when it starts', async () => {
    const ra = await accepted('ra', 'quantizing');
    const rx = await accepted('rx', 'quantizing');
    let during: string[] | undefined;
    const admin = {
      unloadEverywhere: async () => undefined,
      requantize: async () => {
        // rx fails while the run goes on, and (here at once) is past the TTL; the run may still read its files
        await steps.failAndUnload((await store.get(rx.id))!, 'requantize', 'stalled too often');
        await db.query(`UPDATE task_jobs SET updated_at = now() - interval '1 hour' WHERE id = $1`, [rx.id]);
        during = (await queues.reconcile())?.filesRemoved;
        return { checkpointVersion: 7, tasks: ['ra', 'rx'] };
      },
    } as unknown as WorkerAdminService;
    const run = new OnboardSteps(config, store, admin, catchUpStub());
    try {
      expect(await run.run('requantize', ra.id, { report: async () => undefined })).toBe('checkpoint v7');
      expect(during).toEqual([]);
      expect((await store.get(ra.id))?.progress.batch).toEqual(['ra', 'rx']);
      expect((await store.get(rx.id))?.status).toBe('failed');
      // the run is over (ra has its checkpoint): nothing holds rx's files any more once rx is past the TTL (the
      // run's writes on its batch's rows restarted it; here it is past it at once)
      await db.query(`UPDATE task_jobs SET updated_at = now() - interval '1 hour' WHERE id = $1`, [rx.id]);
      expect((await queues.reconcile())?.filesRemoved).toEqual([rx.id]);
      expect(existsSync(rx.dir)).toBe(false);
      expect(existsSync(ra.dir)).toBe(true);
    } finally {
      for (const id of [ra.id, rx.id]) await store.remove(id);
    }
  });

  it('stays when a task that failed while quantizing is deleted: the reconciliation pass removes it, not DELETE', async () => {
    const { id, dir } = await failedLate('gone');
    const admin = { unloadEverywhere: async () => undefined } as unknown as WorkerAdminService;
    const tasks = new TasksService(config, store, admin, {} as WorkersService, queues, catchUpStub());
    expect((await tasks.delete('gone')).status).toBe('deleted');
    expect(existsSync(join(dir, 'calibration.jsonl'))).toBe(true); // a run may still read it
    const row = await store.get(id);
    expect({ status: row?.status, pending: row?.progress.filesPending }).toEqual({ status: 'deleted', pending: true });
    await pastTtl(id);
    expect((await queues.reconcile())?.filesRemoved).toEqual([id]);
    expect(existsSync(dir)).toBe(false);
    expect(typeof (await store.get(id))?.progress.filesRemovedAt).toBe('string');
  });

  it('a failure whose removal cannot be recorded is still the failure recorded; a pass removes the files later', async () => {
    const { id, dir } = await accepted('unrecorded', 'validating');
    const filesRemoved = jest.spyOn(store, 'filesRemoved').mockRejectedValueOnce(new Error('connection reset'));
    try {
      await expect(steps.failAndUnload((await store.get(id))!, 'validate', 'lora_A has NaN')).resolves.toBeUndefined();
    } finally {
      filesRemoved.mockRestore();
    }
    const row = await store.get(id);
    expect({ status: row?.status, error: row?.error, removed: row?.progress.filesRemovedAt }).toEqual({ status: 'failed', error: 'validate: lora_A has NaN', removed: undefined });
    expect(existsSync(dir)).toBe(false); // removed; only the record is missing
    expect((await store.failedWithFiles(0)).map((r) => r.id)).toContain(id); // so a pass records it
    expect((await queues.reconcile())?.filesRemoved).not.toContain(id); // within the TTL
    await db.query(`UPDATE task_jobs SET updated_at = now() - interval '1 hour' WHERE id = $1`, [id]); // past it
    expect((await queues.reconcile())?.filesRemoved).toContain(id);
    expect(typeof (await store.get(id))?.progress.filesRemovedAt).toBe('string');
  });

  it('is never followed out of INLAID_DATA_DIR/tasks: a link in its place is refused, recorded and left alone', async () => {
    const { id, dir } = await accepted('linked', 'validating');
    const outside = join(root, 'outside');
    mkdirSync(outside, { recursive: true });
    writeFileSync(join(outside, 'precious.txt'), 'not the gateway\'s');
    rmSync(dir, { recursive: true });
    symlinkSync(outside, dir);
    await steps.failAndUnload((await store.get(id))!, 'validate', 'bad');
    expect(existsSync(join(outside, 'precious.txt'))).toBe(true);
    const row = await store.get(id);
    expect(row?.progress.filesRefused).toMatch(/not a directory/);
    expect(row?.progress.filesRemovedAt).toBeUndefined();
    expect((await store.failedWithFiles(0)).map((r) => r.id)).not.toContain(id); // never looked at again
    expect((await queues.reconcile())?.filesRemoved).toEqual([]);
    expect(existsSync(join(outside, 'precious.txt'))).toBe(true);
  });

  it('a row that throws does not stop the pass; a removal error is counted, moves the row back, and is given up after a few', async () => {
    const stuck = await failedLate('stuck');
    const after = await failedLate('after');
    await pastTtl(after.id);
    const order = (await store.failedWithFiles(TTL)).map((r) => r.id);
    expect(order.indexOf(stuck.id)).toBeLessThan(order.indexOf(after.id));
    // a store write that throws (the first row's): the pass goes on with the next
    const free = steps.freeFailedFiles.bind(steps);
    jest.spyOn(steps, 'freeFailedFiles').mockImplementation(async (j) => {
      if (j.id === stuck.id) throw new Error('connection reset');
      return free(j);
    });
    expect((await queues.reconcile())?.filesRemoved).toEqual([after.id]);
    expect(existsSync(after.dir)).toBe(false);
    jest.mocked(steps.freeFailedFiles).mockRestore();
    // a removal failing other than by refusal (here ENAMETOOLONG, as EACCES or EBUSY would): counted on the
    // row, which goes to the back, and given up after FILES_REMOVE_TRIES
    const long = { id: randomUUID(), task: `stuck${'x'.repeat(300)}` };
    await store.create({ ...long, kind: 'onboard', status: 'quantizing', adapterPath: null, calibrationPath: null, slo: null, waitForQuantization: false, message: 'accepted' });
    await steps.failAndUnload((await store.get(long.id))!, 'requantize', 'quantizer died');
    const last = await failedLate('last');
    expect(await steps.freeFailedFiles(long)).toBe(false);
    expect((await store.get(long.id))?.progress.filesRemoveError).toMatchObject({ tries: 1, last: expect.stringMatching(/ENAMETOOLONG/) });
    const now = (await store.failedWithFiles(0)).map((r) => r.id);
    expect(now.indexOf(last.id)).toBeLessThan(now.indexOf(long.id)); // written after 'last' now
    for (let i = 1; i < FILES_REMOVE_TRIES; i++) expect(await steps.freeFailedFiles(long)).toBe(false);
    expect((await store.get(long.id))?.progress.filesRemoveError?.tries).toBe(FILES_REMOVE_TRIES);
    expect((await store.failedWithFiles(0)).map((r) => r.id)).not.toContain(long.id); // given up
    expect((await store.failedWithFiles(0)).map((r) => r.id)).toContain(stuck.id); // the store write failed: tried again
  });
});

describe('a re-quantization that fails after a task of its batch ended', () => {
  it('retries without a task that failed meanwhile instead of failing the whole batch; the retry that fails again fails the rest', async () => {
    const qa = await accepted('qa', 'quantizing');
    const qb = await accepted('qb', 'quantizing');
    let calls = 0;
    const admin = {
      unloadEverywhere: async () => undefined,
      requantize: async () => {
        calls += 1;
        // the first run: qb fails meanwhile (e.g. its own flow's step), then the run fails on its files
        if (calls === 1) await store.fail(qb.id, 'requantize', 'stalled too often', { filesPending: true });
        throw new InlaidError(grpcStatus.INTERNAL, 'calibration unreadable');
      },
    } as unknown as WorkerAdminService;
    const config = { redisUrl: REDIS_URL, tasks: parseTasksConfig({ INLAID_DATA_DIR: dataDir, INLAID_QUEUE_PREFIX: PREFIX }) } as unknown as GatewayConfig;
    const steps = new OnboardSteps(config, store, admin, catchUpStub());
    const ctx = { report: async () => undefined };
    try {
      const first = await steps.run('requantize', qa.id, ctx).then(() => null, (e: unknown) => e);
      expect(first).toBeInstanceOf(InlaidError);
      expect((first as InlaidError).status).toBe(grpcStatus.ABORTED); // retried by BullMQ
      expect((first as Error).message).toMatch(/\[qb\] was deleted or failed; retrying without it/);
      expect((await store.get(qa.id))?.status).toBe('quantizing'); // not failed for qb's sake
      await expect(steps.run('requantize', qa.id, ctx)).rejects.toBeInstanceOf(StepFailed); // qa alone fails again: its own fault
      expect(calls).toBe(2);
      expect((await store.get(qb.id))?.error).toBe('requantize: stalled too often');
    } finally {
      for (const id of [qa.id, qb.id]) await store.remove(id);
    }
  });
});

describe('shutdown', () => {
  it('runs no pass after onModuleDestroy, and stops a pass under way between rows', async () => {
    const { queues: g } = gateway({ INLAID_ONBOARD_RECONCILE_MS: '100' });
    const passes = jest.spyOn(g, 'reconcile');
    await until('a few periodic passes', () => passes.mock.calls.length >= 3);
    gateways.splice(gateways.indexOf(g), 1);
    await g.onModuleDestroy();
    const n = passes.mock.calls.length;
    await sleep(500);
    expect(passes.mock.calls.length).toBe(n);
    expect(await g.reconcile(0)).toBeNull();

    const { queues: h } = gateway({ INLAID_ONBOARD_RECONCILE_MS: '0' });
    await h.settled();
    gateways.splice(gateways.indexOf(h), 1);
    const rows = [await accepted('stop1'), await accepted('stop2'), await accepted('stop3')];
    let stopping: Promise<void> | null = null;
    jest.spyOn(h, 'enqueue').mockImplementation(async (...args: [string, string, boolean]) => {
      stopping ??= h.onModuleDestroy(); // the gateway is told to stop while the pass handles its first row
      return OnboardQueues.prototype.enqueue.apply(h, args);
    });
    try {
      const pass = await h.reconcile(0);
      expect(pass?.enqueued).toHaveLength(1);
      expect(stopping).not.toBeNull();
      await stopping;
    } finally {
      for (const r of rows) await store.remove(r.id);
    }
  });

  it('waits between passes within what a timer keeps', () => {
    expect(reconcileDelay(30_000, 0)).toBe(24_000);
    expect(reconcileDelay(30_000, 0.999999)).toBeCloseTo(36_000, -1);
    expect(reconcileDelay(1_789_569_705, 0.999999)).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(reconcileDelay(10 ** 12, 0.5)).toBe(2 ** 31 - 1); // never past it (Node would fire after 1 ms)
  });
});
