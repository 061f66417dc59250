/**
 * The onboarding reconciliation of live gateways (onboard-queues.service.ts) and the removal of a failed
 * task's upload directory (onboard-steps.ts, task-files.ts), against real Postgres and Redis. Two
 * OnboardQueues instances play two gateways sharing one database and one BullMQ prefix; their step
 * processor is a stub that records which step of which task ran (the workers are not part of this).
 */
import { parseTasksConfig, type GatewayConfig } from '@inlaid/config';
import { dropDatabase, openDatabase } from '@inlaid/db';
import { ONBOARD_QUEUE, OnboardStep, stepJobId } from '@inlaid/jobs';
import { Job, Queue } from 'bullmq';
import IORedis from 'ioredis';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataSource } from 'typeorm';
import { OnboardQueues } from './onboard-queues.service';
import { OnboardSteps } from './onboard-steps';
import { taskUploadDir } from './task-files';
import { TaskStore } from './task-store.service';
import type { WorkerAdminService } from './worker-admin.service';

jest.setTimeout(20_000);

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
function gateway(env: Record<string, string>): { queues: OnboardQueues; steps: OnboardSteps } {
  const tasks = parseTasksConfig({ INLAID_DATA_DIR: dataDir, INLAID_QUEUE_PREFIX: PREFIX, ...env });
  const config = { redisUrl: REDIS_URL, tasks } as unknown as GatewayConfig;
  const admin = { unloadEverywhere: async () => undefined } as unknown as WorkerAdminService;
  const steps = new OnboardSteps(config, store, admin);
  jest.spyOn(steps, 'run').mockImplementation(async (step: OnboardStep, taskJobId: string) => {
    if (step === 'requantize') await holdRequantize;
    ran.push(`${taskJobId}.${step}`);
    return 'ok';
  });
  const queues = new OnboardQueues(config, steps, store);
  queues.onApplicationBootstrap();
  gateways.push(queues);
  return { queues, steps };
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

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('periodic reconciliation by live gateways', () => {
  let a: OnboardQueues;
  let b: OnboardQueues;
  let enqueues: jest.SpyInstance[];

  beforeAll(async () => {
    const env = { INLAID_ONBOARD_RECONCILE_MS: '200', INLAID_ONBOARD_RECONCILE_GRACE_MS: '1500' };
    a = gateway(env).queues;
    b = gateway(env).queues;
    enqueues = [jest.spyOn(a, 'enqueue'), jest.spyOn(b, 'enqueue')];
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
    const started = Date.now();
    const { id } = await accepted('orphan');
    await sleep(900); // ~4 passes of each gateway, all within the grace: the row's own gateway may still enqueue it
    expect(enqueued(id)).toBe(0);
    expect(stepsRun(id)).toEqual([]);
    await until('the orphan flow to run', () => stepsRun(id).length === 4);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    await sleep(700); // more passes of both: the flow is live (its root completed), nothing is enqueued again
    expect(enqueued(id)).toBe(1);
    expect(stepsRun(id)).toEqual(ALL_STEPS(id));
  });

  it('adds a flow once however often it is enqueued (job ids derive from the row id)', async () => {
    const { id } = await accepted('twice');
    await Promise.all([a.enqueue(id, 'twice', false), b.enqueue(id, 'twice', false), a.enqueue(id, 'twice', false)]);
    await until('the flow to run', () => stepsRun(id).length === 4);
    await sleep(300);
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
  let queues: OnboardQueues;
  let steps: OnboardSteps;

  beforeAll(() => {
    ({ queues, steps } = gateway({ INLAID_ONBOARD_RECONCILE_MS: '0', INLAID_FAILED_FILES_TTL_S: '1' })); // passes run by the test
  });

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
    expect({ status: row?.status, error: row?.error, removed: typeof row?.progress.filesRemovedAt }).toEqual({ status: 'failed', error: 'validate: lora_A has NaN', removed: 'string' });
    await steps.failAndUnload(job, 'validate', 'again'); // ended already: nothing changes, nothing throws
    expect(await steps.freeFailedFiles(job)).toBe(true); // idempotent
    expect((await store.get(id))?.error).toBe('validate: lora_A has NaN');
  });

  it('stays while a re-quantization may read it, then goes after the TTL once no re-quantization step runs', async () => {
    const { id, dir } = await accepted('late', 'quantizing');
    await steps.failAndUnload((await store.get(id))!, 'requantize', 'quantizer died');
    expect(existsSync(join(dir, 'calibration.jsonl'))).toBe(true);
    expect((await queues.reconcile())?.filesRemoved).toEqual([]); // failed under a second ago (TTL 1 s)
    let release!: () => void;
    holdRequantize = new Promise<void>((r) => (release = r));
    const other = await accepted('busy');
    await queues.enqueue(other.id, 'busy', false);
    await until('a re-quantization step to run', () => stepsRun(other.id).includes(`${other.id}.load`));
    await sleep(1100); // past the TTL
    expect((await queues.reconcile())?.filesRemoved).toEqual([]); // a step is running: it may read the files
    expect(existsSync(dir)).toBe(true);
    release();
    await until('the re-quantization step to finish', () => stepsRun(other.id).length === 4);
    holdRequantize = Promise.resolve();
    await sleep(100);
    expect((await queues.reconcile())?.filesRemoved).toEqual([id]);
    expect(existsSync(dir)).toBe(false);
    expect((await queues.reconcile())?.filesRemoved).toEqual([]); // recorded: not looked at again
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
    await sleep(1100);
    expect((await queues.reconcile())?.filesRemoved).toEqual([]);
    expect(existsSync(join(outside, 'precious.txt'))).toBe(true);
  });
});
